"""Lookups whose position depends on the parameters trace to torch ops (lookup_torch).

(1) Properties: a lookup traced with make_fx under HostReadGuard, its lookup value (or index,
or searched range) a traced input, gives at any input what the exact NumPy path gives (the
one tested against LibreOffice): the same position or entry, NaN where that gives an error.
(2) Models: Solver workbooks whose lookups move with the parameters trace (no fallback), and
the traced program's values and gradients are the interpreter's at several weight points.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from xl2nn.api import compile_workbook
from xl2nn.cells import CellError
from xl2nn.compiler.hostread import HostRead, HostReadGuard
from xl2nn.compiler.program import Program
from xl2nn.functions import FUNCTIONS
from xl2nn.functions.values import NUM, Val, from_objects, to_objects

from .conftest import solver_workbook

SETTINGS = settings(max_examples=40, deadline=None)


class _Ctx:
    device = torch.device("cpu")

    def __init__(self, checked: bool) -> None:
        self.checked = checked


def _num(x: np.ndarray | list[float], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float64).reshape(shape))


def _traced(fn, *inputs: torch.Tensor):
    """fn traced as training traces a model: any host read of an input raises HostRead."""
    with HostReadGuard():
        return make_fx(fn)(*inputs)


def _call(name: str, args: list[Val], checked: bool) -> Val:
    return FUNCTIONS[name].impl(args, _Ctx(checked))


def _agree(ref: Val, got: torch.Tensor, where: np.ndarray | None = None) -> None:
    """The exact path's result `ref` against a traced result: equal numbers; NaN for an error."""
    want = to_objects(ref).reshape(-1)
    got = got.detach().reshape(-1).tolist()
    assert len(want) == len(got)
    keep = np.ones(len(got), bool) if where is None else np.asarray(where).reshape(-1)
    for w, g, k in zip(want, got, keep):
        if not k:
            continue
        if isinstance(w, CellError):
            assert math.isnan(g), (w, g)
        else:
            assert float(w) == g, (w, g)


# -- strategies -------------------------------------------------------------------------

# Halves in a small range: duplicates, exact hits, values below the first and above the last.
_values = st.integers(-8, 8).map(lambda k: k / 2)


@st.composite
def tables(draw, holes: bool = True) -> list[object]:
    """A searched range's entries: sorted up, down or not at all; maybe with blanks and text
    (which a numeric lookup skips)."""
    vals: list[object] = draw(st.lists(_values, min_size=1, max_size=12))
    order = draw(st.sampled_from(["up", "down", "none"]))
    if order != "none":
        vals = sorted(vals, reverse=order == "down")
    if holes:
        for i in draw(st.lists(st.integers(0, len(vals) - 1), max_size=3)):
            vals[i] = draw(st.sampled_from([None, "t"]))
    return vals


_queries = st.lists(st.integers(-10, 10).map(lambda k: k / 2), min_size=1, max_size=8)


def _column(vals: list[object], across: bool = False) -> Val:
    objs = np.array(vals, dtype=object).reshape((1, 1, -1) if across else (1, -1, 1))
    v = from_objects(objs)
    v.is_ref = True
    return v


def _scalar(x: float) -> Val:
    return Val(torch.tensor([[[float(x)]]], dtype=torch.float64), NUM)


# -- (1) positions ----------------------------------------------------------------------

@SETTINGS
@given(table=tables(), xs=_queries, other=_queries, typ=st.sampled_from([1, 0, -1]),
       across=st.booleans())
def test_match_of_a_moving_value(table, xs, other, typ, across):
    """MATCH(x, constant range, type) with x a traced input, at the traced x and another."""
    arr = _column(table, across)
    n = len(xs)
    other = (other * n)[:n]
    fn = _traced(lambda x: _call("MATCH", [Val(x, NUM), arr, _scalar(typ)], False).num, _num(xs, (n, 1, 1)))
    for q in (xs, other):
        x = _num(q, (n, 1, 1))
        _agree(_call("MATCH", [Val(x, NUM), arr, _scalar(typ)], True), fn(x))


@SETTINGS
@given(rows=st.lists(st.lists(_values, min_size=4, max_size=4), min_size=1, max_size=5),
       typ=st.sampled_from([1, 0, -1]), shared=st.booleans(), data=st.data())
def test_match_in_a_moving_range(rows, typ, shared, data):
    """MATCH with the searched range a traced input too: one range for all cells (argmax:
    MATCH(MAX(r), r, 0)) or one per cell (a relative range copied down)."""
    n = len(rows)
    r = _num(rows[:1] if shared else rows, (1 if shared else n, 4, 1))
    x = _num([max(rows[0 if shared else i]) if typ == 0 and data.draw(st.booleans()) else data.draw(_values)
              for i in range(n)], (n, 1, 1))
    fn = _traced(lambda x, r: _call("MATCH", [Val(x, NUM), Val(r, NUM, is_ref=True), _scalar(typ)], False).num, x, r)
    for k in range(2):
        if k:       # new numbers in the range, at the same shape
            r = _num([data.draw(_values) for _ in range(r.numel())], tuple(r.shape))
        _agree(_call("MATCH", [Val(x, NUM), Val(r, NUM, is_ref=True), _scalar(typ)], True), fn(x, r))


@SETTINGS
@given(keys=tables(), xs=_queries, approx=st.booleans(), across=st.booleans(), col=st.sampled_from([1, 2, 3]))
def test_vlookup_and_hlookup_of_a_moving_value(keys, xs, approx, across, col):
    """VLOOKUP / HLOOKUP(x, table, col, TRUE/FALSE) with x a traced input. The second column
    holds distinct numbers (which entry was taken shows); col 3 is #REF! (NaN)."""
    n = len(keys)
    objs = np.empty((1, n, 2), dtype=object)
    objs[0, :, 0] = keys
    objs[0, :, 1] = [100.0 + i for i in range(n)]
    table = from_objects(objs.transpose(0, 2, 1) if across else objs)
    table.is_ref = True
    name = "HLOOKUP" if across else "VLOOKUP"
    a = Val(torch.tensor([[[float(approx)]]], dtype=torch.float64), 1)
    args = lambda x: [Val(x, NUM), table, _scalar(col), a]  # noqa: E731
    trace = lambda: _traced(lambda x: _call(name, args(x), False).num, _num(xs, (len(xs), 1, 1)))  # noqa: E731
    if col == 1 and not all(isinstance(k, float) for k in keys):
        try:
            fn = trace()
        except HostRead:      # blanks or text could be picked: no torch form
            return
        # Traced all the same (no key can be picked, e.g. all blank): it must agree.
    else:
        fn = trace()
    for q in (xs, xs[::-1]):
        x = _num(q, (len(xs), 1, 1))
        _agree(_call(name, args(x), True), fn(x))


@SETTINGS
@given(h=st.integers(1, 5), w=st.integers(1, 4), rs=_queries, cs=_queries,
       which=st.sampled_from(["row", "col", "both"]))
def test_index_of_a_moving_number(h, w, rs, cs, which):
    """INDEX(range, r, c) with the row and/or column number a traced input: Excel truncates;
    out of range is #REF! (NaN). A row or column 0 in a range more than one long is a whole
    row or column, an array the traced form gives as NaN."""
    arr = Val(_num(np.arange(h * w) + 10.0, (1, h, w)), NUM, is_ref=True)
    n = min(len(rs), len(cs))
    r, c = _num(rs[:n], (n, 1, 1)) + 0.25, _num(cs[:n], (n, 1, 1))
    if which == "row":
        c = torch.ones_like(c)
    elif which == "col":
        r = torch.ones_like(r)
    fn = _traced(lambda r, c: _call("INDEX", [arr, Val(r, NUM), Val(c, NUM)], False).num, r, c)
    got = fn(r, c)
    whole = ((torch.trunc(r) == 0) & (h > 1)) | ((torch.trunc(c) == 0) & (w > 1))
    assert torch.isnan(got[whole]).all()
    for k in range(n):
        if not whole[k]:
            ref = _call("INDEX", [arr, Val(r[k:k + 1], NUM), Val(c[k:k + 1], NUM)], True)
            _agree(ref, got[k])


@SETTINGS
@given(n=st.integers(1, 6), rs=_queries, along=st.booleans())
def test_index_of_one_row_or_column(n, rs, along):
    """INDEX(range, k), k traced: down a column, or along a row (INDEX(one row, k))."""
    arr = Val(_num(np.arange(n) + 10.0, (1, 1, n) if along else (1, n, 1)), NUM, is_ref=True)
    k = _num(rs, (len(rs), 1, 1))
    fn = _traced(lambda k: _call("INDEX", [arr, Val(k, NUM)], False).num, k)
    got = fn(k)
    for i in range(len(rs)):
        if torch.trunc(k[i]) == 0 and n > 1:
            assert torch.isnan(got[i]).all()
        else:
            _agree(_call("INDEX", [arr, Val(k[i:i + 1], NUM)], True), got[i])


@SETTINGS
@given(h=st.integers(1, 5), rs=st.lists(st.integers(-1, 7).map(float), min_size=2, max_size=4))
def test_index_with_an_array_of_numbers(h, rs):
    """INDEX(range, {r1; r2; ...}) with the array traced: one entry each, 0 reading as 1."""
    arr = Val(_num(np.arange(h) + 10.0, (1, h, 1)), NUM, is_ref=True)
    r = _num(rs, (1, len(rs), 1))
    fn = _traced(lambda r: _call("INDEX", [arr, Val(r, NUM)], False).num, r)
    _agree(_call("INDEX", [arr, Val(r, NUM)], True), fn(r))


def test_no_torch_form_keeps_the_host_read():
    """Where the entry picked could be text (its kind unknown without the position), the
    HostRead stands: the model runs in the interpreter, named, as before."""
    arr = _column(["a", "b", 3.0])
    with pytest.raises(HostRead):
        _traced(lambda r: _call("INDEX", [arr, Val(r, NUM)], False).num, _num([1.0], (1, 1, 1)))


# -- (2) models -------------------------------------------------------------------------

X = [0.5, 1.2, 2.0, 3.5, 4.1, 5.5]
Y = [1.0, 2.1, 2.9, 4.2, 5.0, 6.3]
G = [-50.0, 1.0, 2.0, 3.0, 5.0]         # ascending keys (G1:G5)
H = [0.5, -1.0, 2.0, 0.25, 1.5]         # values (H1:H5)
I_ = [50.0, 3.0, 2.0, 1.0, -50.0]       # descending keys (I1:I5)

TERMS = {
    "index_match": "=(INDEX($H$1:$H$5,MATCH(A{r}*$C$1+1,$G$1:$G$5,1))+$C$1*A{r}+$C$2-B{r})^2",
    "vlookup": "=(VLOOKUP(A{r}*$C$1+1,$G$1:$H$5,2,TRUE)+$C$1*A{r}+$C$2-B{r})^2",
    "hlookup": "=(HLOOKUP(A{r}*$C$1+1,$K$8:$O$9,2,TRUE)+$C$1*A{r}+$C$2-B{r})^2",
    "exact": "=(VLOOKUP(MIN(MAX(INT(A{r}*$C$1+0.5),1),3),$G$1:$H$5,2,FALSE)+$C$1*A{r}+$C$2-B{r})^2",
    "descending": "=(INDEX($H$1:$H$5,MATCH(A{r}*$C$1+1,$I$1:$I$5,-1))+$C$1*A{r}+$C$2-B{r})^2",
    # argmax: of a row's scores (a range per cell) and of one column's (a range shared by all)
    "argmax": "=(MATCH(MAX(K{r}:M{r}),K{r}:M{r},0)+MATCH(MAX($K$1:$K$6),$K$1:$K$6,0)+$C$1*A{r}+$C$2-B{r})^2",
    # the table holds the parameters: the gradient reaches the one picked
    "param_table": "=(INDEX($C$1:$C$2,MIN(MAX(A{r}*$C$1,1),2))*A{r}-B{r})^2",
}


def _workbook(path: Path, term: str) -> Path:
    rows: list[list[object]] = []
    for i in range(6):
        row: list[object] = [X[i], Y[i], [0.3, 0.7][i] if i < 2 else None]
        if i < 5:
            row += [None, None, None, G[i], H[i], I_[i]]
        rows.append(row)
    formulas = {f"D{r}": term.format(r=r) for r in range(1, 7)}
    formulas["F1"] = "=AVERAGE(D1:D6)"
    for r in range(1, 7):       # scores for the argmax
        formulas[f"K{r}"] = f"=$C$1*A{r}-$C$2*A{r}*A{r}/4"
        formulas[f"L{r}"] = "=$C$2"
        formulas[f"M{r}"] = "=1-$C$1"
    for j, col in enumerate("KLMNO"):   # the G:H table across, for HLOOKUP
        formulas[f"{col}8"], formulas[f"{col}9"] = f"=G{j + 1}", f"=H{j + 1}"
    return solver_workbook(path, rows, formulas, params="$C$1:$C$2", objective="$F$1")


WEIGHTS = [(0.3, 0.7), (0.1, 0.2), (0.9, -0.4), (-0.2, 1.3), (0.55, 0.05), (1.7, 0.4)]


def _grads(model, run) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    value = run()
    value.backward()
    return float(value.detach()), torch.cat([p.grad.reshape(-1) for p in model.weights.values()])


@pytest.mark.parametrize("which", sorted(TERMS))
def test_lookup_moved_by_the_parameters_traces(tmp_path, which):
    c = compile_workbook(_workbook(tmp_path / f"{which}.xlsx", TERMS[which]))
    p = Program(c.model)
    assert p.fallback == ""                 # traced
    assert p.check(points=8) <= 1e-12       # traced program == interpreter at 8 weight points
    (w,) = c.model.weights.values()
    for point in WEIGHTS:     # the interpreter reads positions on the host; the trace computes them
        with torch.no_grad():
            w.copy_(torch.tensor(point, dtype=torch.float64).reshape(w.shape))
        want, want_grad = _grads(c.model, c.model)
        got, got_grad = _grads(c.model, p)
        assert math.isfinite(want) and got == pytest.approx(want, rel=1e-12)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_gradient_reaches_the_picked_parameter_only(tmp_path):
    """INDEX($C$1:$C$2, row(C1)): the position is piecewise constant (no gradient through it);
    each row's term differentiates as (w*x - y)^2 in the parameter it picked."""
    c = compile_workbook(_workbook(tmp_path / "param.xlsx", TERMS["param_table"]))
    p = Program(c.model)
    assert p.fallback == ""
    (w,) = c.model.weights.values()
    for c1, c2 in [(0.3, 0.7), (0.45, -0.5), (0.8, 1.1)]:
        with torch.no_grad():
            w.copy_(torch.tensor([c1, c2], dtype=torch.float64).reshape(w.shape))
        want = [0.0, 0.0]
        for x, y in zip(X, Y):
            k = int(min(max(x * c1, 1), 2)) - 1
            want[k] += 2 * ((c1, c2)[k] * x - y) * x / len(X)
        _, got = _grads(c.model, p)
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)
        picks_c2 = any(x * c1 >= 2 for x in X)
        assert (got[1] != 0.0) == picks_c2
