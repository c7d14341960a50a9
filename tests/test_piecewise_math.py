"""The piecewise-constant Math functions (ROUND and kin, CEILING and kin, INT, SIGN, MOD, QUOTIENT):
their torch forms, which training traces, give exactly the scalar forms' doubles (Excel's
values), carry the true gradient (zero through the rounding), and trace without a host read."""
from __future__ import annotations

import math
from decimal import Decimal
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xl2nn.api import compile_workbook
from xl2nn.cells import CellError
from xl2nn.compiler.program import Program
from xl2nn.functions import FUNCTIONS
from xl2nn.functions import math as xmath
from xl2nn.functions import rounding
from xl2nn.functions.registry import Elementwise
from xl2nn.functions.values import NUM, Val, to_objects

from .conftest import solver_workbook

SCALAR = {
    "ROUND": rounding._ROUND, "ROUNDUP": rounding._ROUNDUP, "ROUNDDOWN": rounding._ROUNDDOWN,
    "TRUNC": rounding._ROUNDDOWN, "CEILING": rounding._CEILING, "FLOOR": rounding._FLOOR,
    "CEILING.MATH": rounding._CEILING_MATH, "FLOOR.MATH": rounding._FLOOR_MATH,
    "QUOTIENT": rounding._QUOTIENT, "MOD": xmath._MOD, "INT": xmath._UNARY["INT"],
    "SIGN": xmath._UNARY["SIGN"],
}


class _Ctx:
    def __init__(self, checked: bool) -> None:
        self.device = torch.device("cpu")
        self.checked = checked


def _col(values: list[float]) -> Val:
    return Val(torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1), NUM)


def _torch_form(name: str, cols: list[list[float]]) -> list[float]:
    """The registered function on numeric Vals in training's mode; the scalar path may not run."""
    with mock.patch.object(Elementwise, "slow", side_effect=AssertionError("left torch")):
        v = FUNCTIONS[name].impl([_col(c) for c in cols], _Ctx(checked=False))
    return v.num.reshape(-1).tolist()


def _assert_torch_is_scalar(name: str, rows: list[tuple[float, ...]]) -> None:
    cols = [list(c) for c in zip(*rows)]
    got = _torch_form(name, cols)
    for row, g in zip(rows, got):
        want = SCALAR[name].scalar_fn(*row)
        if isinstance(want, CellError):     # an Excel error, not a value to match
            continue
        assert g == want, f"{name}{row}: torch {g!r}, Excel {want!r}"


# -- numbers: plain floats, decimal ties at many places, decimals and their neighbouring doubles --

def _nudged(v: float, steps: int) -> float:
    for _ in range(abs(steps)):
        v = math.nextafter(v, math.inf if steps > 0 else -math.inf)
    return v


SIGNS = st.sampled_from([1.0, -1.0])
PLAIN = st.floats(-1e16, 1e16, allow_nan=False, allow_infinity=False)
TIES = st.builds(lambda m, p, s: s * float(Decimal(f"{m}5E-{p}")),      # ...5 at the last place
                 st.integers(0, 10 ** 16), st.integers(0, 18), SIGNS)
DECIMALS = st.builds(lambda m, p, k, s: s * _nudged(float(Decimal(m).scaleb(-p)), k),
                     st.integers(0, 10 ** 17), st.integers(0, 20), st.integers(-2, 2), SIGNS)
SCALED = st.builds(lambda f, e, s: s * math.ldexp(f, e), st.floats(0.5, 1.0), st.integers(-30, 56), SIGNS)
KNOWN = st.sampled_from([2.675, 0.5, -2.5, 1.005, 1e15 + 0.5, -0.285, 1.45, 5.55, 3.3 * 3, 0.1 + 0.2,
                         499999999999999.94, 4503599627370495.5, 0.0, 1e-9, 123456789012345.67])
NUMBERS = st.one_of(PLAIN, TIES, DECIMALS, SCALED, KNOWN)
DIGITS = st.one_of(st.integers(-5, 15).map(float), st.floats(-5.99, 15.99))
WIDE_DIGITS = st.integers(-22, 22).map(float)
SETTINGS = settings(max_examples=300, deadline=None)


def _toward_exact(x: float, d: float) -> bool:
    """Where the 15-digit torch form is exact: not 1E+37 and up, nor below 1E-8 to 8+ decimals."""
    a = abs(x)
    return a < 1e37 and not (0 < a < 1e-8 and math.trunc(d) >= 8)


@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN", "TRUNC"])
@SETTINGS
@given(rows=st.lists(st.tuples(NUMBERS, st.one_of(DIGITS, WIDE_DIGITS)), min_size=1, max_size=40))
def test_digits_torch_form_is_excel(name, rows):
    if name != "ROUND":
        rows = [r for r in rows if _toward_exact(*r)] or [(2.5, 0.0)]
    _assert_torch_is_scalar(name, rows)


@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN"])
def test_digits_known_cases(name):
    rows = [(2.675, 2), (-2.675, 2), (1.005, 2), (0.5, 0), (-2.5, 0), (1e15 + 0.5, 0), (1e15 + 0.5, 1),
            (499999999999999.94, 1), (4503599627370495.5, 0), (1234.5678, -2), (-1234.5, -2), (2.5, -0.5),
            (3.3 * 3, 1), (0.3 - 0.1, 1), (1.45, 1), (-0.285, 2), (8.97, 1.9), (0.0, 3), (-0.0, 0),
            (1e-300, 5), (1e300, -22), (1.7976931348623157e308, 3), (5e-324, 22), (0.45, 16)]
    rows = [(x, float(d)) for x, d in rows if name == "ROUND" or _toward_exact(x, d)]
    _assert_torch_is_scalar(name, rows)


def test_round_rounds_what_excel_shows():
    assert _torch_form("ROUND", [[2.675, 1.005, -2.5, 0.285], [2, 2, 0, 2]]) == [2.68, 1.01, -3.0, 0.29]


def test_round_where_doubles_are_sparse():
    """Decimal ties and near-ties where a·10^d nears 2^53: one double per tenth of a unit or
    fewer, so the tie may be shown or not (499999999999999.94 to 1 place is ...99.9)."""
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(3000):
        d = int(rng.integers(-22, 23))
        n = int(2.0 ** rng.uniform(44, 53.5))
        v = float((Decimal(n) + Decimal(str(rng.choice(["0.5", "0.45", "0.4", "0.55", "0.95", "0.05"])))).scaleb(-d))
        rows.append((_nudged(v, int(rng.integers(-2, 3))), float(d)))
    _assert_torch_is_scalar("ROUND", rows)


@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN", "TRUNC", "INT", "SIGN", "CEILING", "FLOOR",
                                  "CEILING.MATH", "FLOOR.MATH", "QUOTIENT", "MOD"])
def test_an_error_stays_an_error_in_training(name):
    """Training's errors are non-finite numbers: none of these makes one a valid number."""
    bad = [math.inf, -math.inf, math.nan]
    cols = [bad] + [[2.0] * 3] * ({"INT": 0, "SIGN": 0, "CEILING.MATH": 2, "FLOOR.MATH": 2}.get(name, 1))
    got = FUNCTIONS[name].impl([_col(c) for c in cols], _Ctx(checked=False)).num.reshape(-1).tolist()
    assert not any(math.isfinite(g) for g in got), got
    if name in ("ROUND", "ROUNDUP", "ROUNDDOWN", "TRUNC"):      # an error as the digits
        got = FUNCTIONS[name].impl([_col([2.5] * 3), _col(bad)], _Ctx(checked=False)).num.reshape(-1).tolist()
        assert not any(math.isfinite(g) for g in got), got



MULTIPLES = st.one_of(st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 7.5, 0.01, 0.3, 1e-3, 0.7, 0.0]),
                      st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@pytest.mark.parametrize("name", ["CEILING", "FLOOR", "QUOTIENT", "MOD"])
@SETTINGS
@given(rows=st.lists(st.tuples(NUMBERS, st.one_of(MULTIPLES, MULTIPLES.map(lambda s: -s))),
                     min_size=1, max_size=40))
def test_multiples_torch_form_is_excel(name, rows):
    rows = [r for r in rows if r[1] == 0 or abs(r[0] / r[1]) < 1e37] or [(2.5, 1.0)]
    _assert_torch_is_scalar(name, rows)


@pytest.mark.parametrize("name", ["CEILING.MATH", "FLOOR.MATH"])
@SETTINGS
@given(rows=st.lists(st.tuples(NUMBERS, MULTIPLES, st.sampled_from([0.0, 1.0, -1.0])), min_size=1, max_size=40))
def test_math_multiples_torch_form_is_excel(name, rows):
    rows = [r for r in rows if r[1] == 0 or abs(r[0] / r[1]) < 1e37] or [(2.5, 1.0, 0.0)]
    _assert_torch_is_scalar(name, rows)


@pytest.mark.parametrize("name", ["INT", "SIGN"])
@SETTINGS
@given(xs=st.lists(NUMBERS, min_size=1, max_size=40))
def test_unary_torch_form_is_excel(name, xs):
    _assert_torch_is_scalar(name, [(x,) for x in xs])


def test_multiples_known_cases():
    _assert_torch_is_scalar("CEILING", [(0.3, 0.1), (7.1, 0.5), (-7, 2), (-7, -2), (2.5, 0), (1e-320, 3.0)])
    _assert_torch_is_scalar("FLOOR", [(0.3, 0.1), (-7, 2), (0.7, 0.1), (4.35, 0.05), (0, 0)])
    _assert_torch_is_scalar("QUOTIENT", [(0.6, 0.2), (-7.5, -2), (7, 2), (1.2e16 + 2, 3.0)])


# -- eval: extreme magnitudes and digits past ±22 take the exact scalar path ------------------------

EXTREME = st.one_of(NUMBERS, st.floats(allow_nan=False, allow_infinity=False))


@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN", "CEILING", "FLOOR", "QUOTIENT"])
@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(EXTREME, st.one_of(DIGITS, st.integers(-400, 400).map(float))),
                     min_size=1, max_size=20))
def test_checked_mode_is_excel_everywhere(name, rows):
    cols = [list(c) for c in zip(*rows)]
    got = to_objects(FUNCTIONS[name].impl([_col(c) for c in cols], _Ctx(checked=True))).reshape(-1)
    for row, g in zip(rows, got):
        want = SCALAR[name].scalar_fn(*row)
        if isinstance(want, float) and math.isinf(want):
            want = CellError("#NUM!")      # the interpreter's _finite turns these into #NUM!
        if isinstance(want, CellError):
            assert isinstance(g, CellError) or math.isinf(g), (row, g, want)
        else:
            assert g == want, (row, g, want)


@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN"])
def test_constant_digits_past_22_take_the_scalar_path_in_training(name):
    rows = [(1.2345678901234567e-20, 25.0), (2.5e30, -30.0), (7.0, -23.0), (1e-30, 30.0)]
    got = FUNCTIONS[name].impl([_col([r[0] for r in rows]), _col([r[1] for r in rows])], _Ctx(checked=False))
    assert to_objects(got).reshape(-1).tolist() == [SCALAR[name].scalar_fn(*r) for r in rows]


# -- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ROUND", "ROUNDUP", "ROUNDDOWN", "TRUNC", "INT", "SIGN"])
def test_rounding_has_zero_gradient(name):
    x = torch.tensor([2.675, -1.3, 0.0, 1e300, -5e-324, 1e15 + 0.5], dtype=torch.float64, requires_grad=True)
    args = [Val(x.reshape(1, -1, 1), NUM)] + ([_col([2.0])] if name not in ("INT", "SIGN") else [])
    out = FUNCTIONS[name].impl(args, _Ctx(checked=False)).num
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_multiple_gradients_are_the_true_ones():
    """MOD(a,b) = a - b*floor(a/b): 1 for a, -floor(a/b) for b. CEILING(x,s) = ceil(x/s)*s: 0, ceil(x/s)."""
    def grads(name: str, first: list[float], second: list[float]) -> tuple[list[float], list[float]]:
        a, b = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (first, second))
        out = FUNCTIONS[name].impl([Val(a.reshape(1, -1, 1), NUM), Val(b.reshape(1, -1, 1), NUM)], _Ctx(False))
        out.num.sum().backward()
        return a.grad.tolist(), b.grad.tolist()

    assert grads("MOD", [7.3, -7.3, 2.5], [2.0, 2.0, -0.7]) == ([1.0, 1.0, 1.0], [-3.0, 4.0, 4.0])
    assert grads("CEILING", [7.3, -7.3], [2.0, 2.0]) == ([0.0, 0.0], [4.0, -3.0])


# -- traced: a Solver model through each function traces, and matches the interpreter ---------------

TRACED = {
    "ROUND": "ROUND({x},2)", "ROUNDUP": "ROUNDUP({x},1)", "ROUNDDOWN": "ROUNDDOWN({x},1)",
    "TRUNC": "TRUNC({x},1)", "INT": "INT({x})", "CEILING": "CEILING({x},0.25)", "FLOOR": "FLOOR({x},0.25)",
    "CEILING.MATH": "_xlfn.CEILING.MATH({x},0.5,1)", "FLOOR.MATH": "_xlfn.FLOOR.MATH({x},0.5)",
    "MOD": "MOD({x},0.7)", "SIGN": "SIGN({x}-1)", "QUOTIENT": "QUOTIENT({x},0.7)",
}
DATA = [[2.675, 3.0], [-1.005, -0.5], [0.5, 1.2], [-2.5, -3.1], [3.3, 4.0], [7.45, 8.2]]


def _grads(model, run) -> list[torch.Tensor]:
    model.zero_grad()
    run().backward()
    return [p.grad.detach().clone() for p in model.weights.values()]


@pytest.mark.parametrize("name", list(TRACED))
def test_solver_model_traces(name, tmp_path):
    formulas = {f"D{r}": "=(" + TRACED[name].format(x=f"A{r}*$C$1") + f"+$C$1*A{r}+$C$2-B{r})^2"
                for r in range(1, len(DATA) + 1)}
    formulas["F1"] = f"=AVERAGE(D1:D{len(DATA)})"
    rows = [row + ([1.0] if i == 0 else [0.5] if i == 1 else []) for i, row in enumerate(DATA)]
    c = compile_workbook(solver_workbook(tmp_path / "m.xlsx", rows, formulas, "$C$1:$C$2", "$F$1"))
    p = Program(c.model)
    assert p.fallback == ""             # traced: nothing read on the host
    assert p.check(points=8) <= 1e-12   # traced program == interpreter at 8 weight points
    fn = SCALAR[name]
    extra = {"ROUND": [2.0], "ROUNDUP": [1.0], "ROUNDDOWN": [1.0], "TRUNC": [1.0], "CEILING": [0.25],
             "FLOOR": [0.25], "CEILING.MATH": [0.5, 1.0], "FLOOR.MATH": [0.5, 0.0], "MOD": [0.7],
             "QUOTIENT": [0.7]}.get(name, [])
    (w,) = c.model.weights.values()     # C1:C2
    for c1, c2 in [(1.0, 0.5), (0.93, -0.2), (1.37, 1.1)]:
        with torch.no_grad():
            w.copy_(torch.tensor([c1, c2], dtype=torch.float64).reshape(w.shape))
        g_int, g_prog = _grads(c.model, c.model), _grads(c.model, p)
        for gi, gp in zip(g_int, g_prog):
            torch.testing.assert_close(gp, gi, rtol=1e-12, atol=1e-15)
        # ...and they are the true gradient: nothing through the rounding, 1 for MOD's number.
        d_c1 = d_c2 = 0.0
        for a, b in DATA:
            x = a * c1 - 1 if name == "SIGN" else a * c1
            res = fn.scalar_fn(x, *extra) + c1 * a + c2 - b
            d_c1 += 2 * res * (a + (a if name == "MOD" else 0.0)) / len(DATA)
            d_c2 += 2 * res / len(DATA)
        assert torch.cat([g.reshape(-1) for g in g_int]).tolist() == pytest.approx([d_c1, d_c2], rel=1e-12)
