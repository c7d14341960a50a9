"""Columns of error values flow through operators, comparisons, IF and elementwise functions
in bulk (values.error_overlay), with exactly the scalar path's result: each entry the first
argument's error in order, or the value computed from numbers, booleans and empties."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xl2nn.cells import CellError
from xl2nn.compiler.interpret import EvalContext
from xl2nn.functions.logical import _select_slow, if_
from xl2nn.functions.math import _UNARY
from xl2nn.functions.operators import ARITHMETIC, binary
from xl2nn.functions.registry import Elementwise
from xl2nn.functions.values import from_objects, to_objects

CTX = EvalContext(resolve=lambda ref: None, device=torch.device("cpu"))
ERRORS = [CellError("#VALUE!"), CellError("#DIV/0!"), CellError("#N/A")]
entry = st.one_of(st.floats(-50, 50, allow_nan=False).map(lambda x: round(x, 3)), st.sampled_from(ERRORS),
                  st.booleans(), st.none(), st.sampled_from([0.0, 2.0, -1.0]))


def _col(values: list) -> np.ndarray:
    out = np.empty((len(values), 1, 1), dtype=object)
    out[:, 0, 0] = values
    return out


def _same(got, want) -> bool:
    g, w = to_objects(got).reshape(-1).tolist(), to_objects(want).reshape(-1).tolist()
    return all(type(a) is type(b) and (a == b or (isinstance(a, float) and np.isclose(a, b, rtol=1e-15)))
               for a, b in zip(g, w)) and len(g) == len(w)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(entry, entry), min_size=1, max_size=12), st.sampled_from(sorted(ARITHMETIC) + ["<", "="]))
def test_operators_over_errors_equal_the_scalar_path(pairs, op):
    a, b = (from_objects(_col([p[i] for p in pairs])) for i in (0, 1))
    got = binary(op, a, b, CTX)
    fn = ARITHMETIC.get(op)
    if fn is None:
        from xl2nn.functions.operators import compare_scalars
        fn = Elementwise(lambda *_: None, lambda x, y: compare_scalars(op, x, y), result_kind=1, coerce=lambda x: x)
    assert _same(got, fn.slow([a, b], CTX))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(entry, entry, entry), min_size=1, max_size=12))
def test_if_over_errors_equals_the_scalar_path(triples):
    cond, yes, no = (from_objects(_col([t[i] for t in triples])) for i in (0, 1, 2))
    assert _same(if_([cond, yes, no], CTX), _select_slow(cond, yes, no, CTX))


@settings(max_examples=100, deadline=None)
@given(st.lists(entry, min_size=1, max_size=12), st.sampled_from(["SQRT", "LN", "ABS", "EXP"]))
def test_functions_over_errors_equal_the_scalar_path(values, name):
    x = from_objects(_col(values))
    got = _UNARY[name]([x], CTX)
    assert _same(got, _UNARY[name].slow([x], CTX))
    errors = [v for v in values if isinstance(v, CellError)]
    out = to_objects(got).reshape(-1).tolist()
    assert [o for o, v in zip(out, values) if isinstance(v, CellError)] == errors


def test_a_column_of_errors_goes_the_bulk_way(monkeypatch):
    """100,000 #VALUE! entries and numbers through +, < and IF without the scalar path."""
    n = 100_000
    values = [ERRORS[0] if i % 3 == 0 else float(i % 7 - 3) for i in range(n)]
    x = from_objects(_col(values))
    monkeypatch.setattr(Elementwise, "slow", lambda *a: (_ for _ in ()).throw(AssertionError("scalar path")))
    import xl2nn.functions.logical as logical
    monkeypatch.setattr(logical, "_select_slow", lambda *a: (_ for _ in ()).throw(AssertionError("scalar path")))
    zero = from_objects(_col([0.0]))
    relu = if_([binary("<", x, zero, CTX), zero, x], CTX)
    out = binary("+", relu, relu, CTX)
    objs = to_objects(out).reshape(-1)
    assert objs[0] == ERRORS[0] and objs[1] == 0.0 and objs[4] == 2.0 and objs[5] == 4.0
