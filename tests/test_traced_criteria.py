"""The *IF / *IFS functions on training's torch path (ctx.checked False), which runs traced:
the same values as the exact NumPy path (eval, the one tested against LibreOffice), masks
recomputed from the parameters on every forward, gradients through the summed, averaged
and extreme values only."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xl2nn.api import compile_workbook
from xl2nn.cells import CellError
from xl2nn.compiler.program import Program
from xl2nn.functions import FUNCTIONS
from xl2nn.functions.values import ERROR, Val, from_objects

from .conftest import solver_workbook


class _Ctx:
    def __init__(self, checked: bool) -> None:
        self.device = torch.device("cpu")
        self.checked = checked


# -- property tests: the torch path against the NumPy path ---------------------------------------

# Ties with the criteria, signed zeros, numbers within approxEqual's 2^-48 of a tie.
TIES = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 3.0, 1.0 + 2.0 ** -50, 1.0 + 2.0 ** -40, 1e-300]
NUMBERS = st.one_of(st.sampled_from(TIES), st.floats(-5, 5, allow_nan=False, allow_subnormal=False))
OPS = ["", "=", "<>", "<", "<=", ">", ">="]
# A numeric criterion: a number, or an operator and a number written as text.
CRITERION = st.one_of(NUMBERS, st.tuples(st.sampled_from(OPS), NUMBERS).map(lambda t: t[0] + repr(t[1])))
# What else a range holds beside numbers: numeric criteria select none of it.
OTHER = [None, True, False, "1", "2.5", "x", "", CellError("#N/A")]
CELL = st.one_of(NUMBERS, NUMBERS, NUMBERS, st.sampled_from(OTHER))
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _column(values: list[object], grad: bool = False) -> Val:
    """A range (1, n, 1); its numbers a leaf that may require grad, as a computed range's are."""
    v = from_objects(np.array(values, dtype=object).reshape(1, -1, 1))
    v.num.requires_grad_(grad)
    v.is_ref = True
    return v


def _per_cell(values: list[object]) -> Val:
    return from_objects(np.array(values, dtype=object).reshape(-1, 1, 1))


def _both(name: str, args: list[Val]) -> tuple[Val, Val]:
    impl = FUNCTIONS[name].impl
    return impl(args, _Ctx(True)), impl(args, _Ctx(False))


def _same(exact: Val, traced: Val) -> None:
    """Equal numbers; where eval gives an error (#DIV/0!: nothing to average), training NaN."""
    want, got = exact.num.detach(), traced.num.detach()
    assert got.shape == want.shape
    bad = torch.as_tensor(exact.kinds() == ERROR)
    assert torch.isnan(got[bad]).all()
    assert (got[~bad] == want[~bad]).all(), (got, want)


@SETTINGS
@given(rng=st.lists(CELL, min_size=1, max_size=10), crits=st.lists(CRITERION, min_size=1, max_size=4),
       data=st.data())
def test_countif_sumif_averageif(rng, crits, data):
    vals = data.draw(st.lists(NUMBERS, min_size=len(rng), max_size=len(rng)))
    col, crit, values = _column(rng), _per_cell(crits), _column(vals)
    for name in ("COUNTIF", "SUMIF", "AVERAGEIF"):
        _same(*_both(name, [col, crit] + ([] if name == "COUNTIF" else [values])))
    if CellError("#N/A") not in rng:     # the range summed itself (a selected error is eval's result)
        for name in ("SUMIF", "AVERAGEIF"):
            _same(*_both(name, [col, crit]))


@SETTINGS
@given(rng1=st.lists(CELL, min_size=1, max_size=8), crit1=CRITERION, crit2=CRITERION, data=st.data())
def test_ifs_functions(rng1, crit1, crit2, data):
    n = len(rng1)
    rng2 = data.draw(st.lists(NUMBERS, min_size=n, max_size=n))
    vals = data.draw(st.lists(NUMBERS, min_size=n, max_size=n))
    pairs = [_column(rng1), _per_cell([crit1]), _column(rng2), _per_cell([crit2])]
    _same(*_both("COUNTIFS", pairs))
    for name in ("SUMIFS", "AVERAGEIFS", "MAXIFS", "MINIFS"):
        exact, traced = _both(name, [_column(vals)] + pairs)
        _same(exact, traced)
    for name in ("MAXIFS", "MINIFS"):               # nothing selected: 0
        never = [_column(rng1), _per_cell([crit1]), _column(rng1), _per_cell(["zzz"])]
        exact, traced = _both(name, [_column(vals)] + never)
        assert float(exact.num) == float(traced.num) == 0.0


@SETTINGS
@given(rng=st.lists(NUMBERS, min_size=1, max_size=10),
       crits=st.lists(st.one_of(NUMBERS, st.booleans(), st.sampled_from(["x", ">1", None])), min_size=1, max_size=5))
def test_criteria_that_are_values(rng, crits):
    """Criteria given as numbers or booleans (cells computed from the parameters: read from the
    tensor, not on the host), mixed with texts and blanks."""
    col, crit = _column(rng + [True, "x", None]), _per_cell(crits)
    for name in ("COUNTIF", "SUMIF"):
        _same(*_both(name, [col, crit]))


@SETTINGS
@given(rng=st.lists(st.one_of(NUMBERS, st.sampled_from(OTHER[:-1])), min_size=1, max_size=8),
       crits=st.lists(CRITERION, min_size=1, max_size=3), data=st.data())
def test_gradients_flow_through_values_only(rng, crits, data):
    """d SUMIF(range, criterion, values)/d values_j counts the criteria selecting cell j (read
    from the exact path with values = e_j); the range's numbers get none."""
    n = len(rng)
    vals = data.draw(st.lists(NUMBERS, min_size=n, max_size=n))
    col, crit, values = _column(rng, grad=True), _per_cell(crits), _column(vals, grad=True)
    FUNCTIONS["SUMIF"].impl([col, crit, values], _Ctx(False)).num.sum().backward()
    assert col.num.grad is None or not col.num.grad.any()
    onehot = [FUNCTIONS["SUMIF"].impl([col, crit, _column([float(i == j) for i in range(n)])], _Ctx(True))
              for j in range(n)]
    want = torch.tensor([float(v.num.sum()) for v in onehot], dtype=torch.float64)
    assert torch.equal(values.num.grad.reshape(-1), want)


# -- traced models: Solver workbooks whose criteria ranges and values depend on the parameters ----

ROWS = [[1, 2], [2, 1], [3, 5], [4, 3], [5, 8], [6, 4]]
RESIDUALS = {f"D{r}": f"=A{r}*$C$1+$C$2-B{r}" for r in range(1, 7)}
SCALED = {f"E{r}": f"=D{r}*$C$1" for r in range(1, 7)}
MIXED = {f"G{r}": f'=IF(A{r}>3,D{r},"x")' for r in range(1, 7)}      # numbers and a text, per row

MODELS = {
    "sumif_countif_dynamic_range": ({}, '=SUMIF(D1:D6,">0",D1:D6)^2+COUNTIF(D1:D6,">0")'),
    "averageif_dynamic": ({}, '=SUMSQ(D1:D6)+AVERAGEIF(D1:D6,"<0")'),
    "countifs_two_dynamic_ranges": (SCALED, '=COUNTIFS(D1:D6,">0",E1:E6,"<=1")+SUMSQ(D1:D6)'),
    "sumifs_constant_criteria_dynamic_sum": ({}, '=SUMIFS(D1:D6,A1:A6,">2",B1:B6,"<>5")^2+SUMSQ(D1:D6)'),
    "sumif_constant_mask": (SCALED, '=SUMIF(A1:A6,">2",D1:D6)^2+AVERAGEIF(B1:B6,">=3",E1:E6)'),
    "maxifs_minifs": (SCALED, ('=_xlfn.MAXIFS(D1:D6,A1:A6,">2")^2+_xlfn.MINIFS(E1:E6,D1:D6,">-1")'
                               '+_xlfn.MAXIFS(E1:E6,D1:D6,"<=0",E1:E6,"<>0")')),
    "averageifs_dynamic": (SCALED, '=_xlfn.AVERAGEIFS(E1:E6,D1:D6,">-3",A1:A6,"<6")+SUMSQ(D1:D6)'),
    "criterion_is_a_parameter": ({}, "=COUNTIF(A1:A6,$C$1)*10+SUMIF(A1:A6,$C$1,D1:D6)+SUMSQ(D1:D6)"),
    "criterion_is_a_boolean": ({}, "=COUNTIF(D1:D6,$C$1>0)+SUMSQ(D1:D6)"),
    "per_row_criteria": ({**{f"H{r}": f"=COUNTIF($D$1:$D$6,D{r})*D{r}+SUMIF($D$1:$D$6,\"<\"&A{r})"
                             for r in range(1, 7)}}, "=SUMSQ(H1:H6)"),
    "mixed_range_and_criteria": ({**MIXED, **{f"H{r}": f"=COUNTIF($D$1:$D$6,G{r})+D{r}" for r in range(1, 7)}},
                                 '=SUMSQ(H1:H6)+COUNTIF(G1:G6,">-2")+SUMIF(G1:G6,"<>x")^2'),
}
# (C1, C2): the residuals' signs change from point to point, and C1 = 3 ties with A3.
POINTS = [(0.5, -0.5), (1.5, 0.0), (-1.0, 2.0), (2.0, 1.0), (3.0, -4.0), (1.0, 3.0), (0.0, 0.0), (1.25, 0.75)]


def _set(model, point: tuple[float, float]) -> None:
    (w,) = model.weights.values()
    with torch.no_grad():
        w.copy_(torch.tensor(point, dtype=w.dtype).reshape(w.shape))


def _run(model, run) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    out = run()
    out.backward()
    (w,) = model.weights.values()
    return float(out.detach()), w.grad.detach().clone().reshape(-1)


@pytest.mark.parametrize("name", list(MODELS))
def test_traced_model_matches_the_interpreter(tmp_path: Path, name: str) -> None:
    extra, objective = MODELS[name]
    book = solver_workbook(tmp_path / f"{name}.xlsx", ROWS, {**RESIDUALS, **extra, "C1": 0.5, "C2": -0.5, "F1": objective},
                           params="C1:C2", objective="F1")
    model = compile_workbook(book).model
    program = Program(model)
    assert program.fallback == ""
    assert program.check(points=8) <= 1e-12
    signs, values = set(), set()
    for point in POINTS:
        _set(model, point)
        want, g_want = _run(model, model)
        got, g_got = _run(model, program)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15, nan_ok=True), point
        torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-15, equal_nan=True)
        signs.add(tuple(float(model.value(f"D{r}").detach()) > 0 for r in range(1, 7)))
        values.add(want)
    # The points did move the masks: a mask frozen at the traced weights would have shown.
    assert len(signs) >= 4 and len(values) >= 4


def test_criteria_built_by_concatenation_stay_on_the_host(tmp_path: Path) -> None:
    """">"&C1 is text made on the host from a parameter: the model runs in the interpreter,
    and says where."""
    book = solver_workbook(tmp_path / "concat.xlsx", ROWS, {**RESIDUALS, "C1": 0.5, "C2": -0.5,
                                                            "F1": '=COUNTIF(A1:A6,">"&$C$1)+SUMSQ(D1:D6)'},
                           params="C1:C2", objective="F1")
    program = Program(compile_workbook(book).model)
    assert "F1" in program.fallback and not math.isnan(float(program().detach()))
