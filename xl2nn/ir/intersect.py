"""Implicit intersection: a range where an ordinary formula wants one value.

In a formula that is not an array formula, Excel reads a multi-cell range given where a
single value belongs (an operand of `*`, the argument of EXP, IF's condition, ...) as the
one cell of the range in the formula's own row (a column range) or column (a row range),
and as #VALUE! when the formula's cell lies outside the range: `=A1:A5*2` in row 3 is
`=A3*2`. Which arguments want a value is Excel's parameter class of each function
(`Function.args`): a reference-class argument takes a range whole (SUM(A1:A5)); an
array-class one computes everything inside as arrays (SUMPRODUCT((A1:A5>0)*B1:B5)).

This is decided once per formula shape and cell position, before evaluation: each
affected range becomes a one-cell reference (relative along the intersected axis), or
#VALUE! for the cells outside it, so the interpreter and the compiled model never see
the distinction.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..formula.ast import Binary, Call, ErrorLit, Node, Ref, Unary
from ..functions import FUNCTIONS
from ..functions.reference import REFERENCE_CALLS

VALUE, REFERENCE, ARRAY = "V", "R", "A"


def _operand(ctx: str) -> str:
    """An operator's operands: arrays inside an array computation, else single values."""
    return ARRAY if ctx == ARRAY else VALUE


def _argument(call: Call, i: int, ctx: str) -> str:
    """How argument i of `call` is read when the call itself is read in context `ctx`."""
    if call.name == "SINGLE":           # the @ operator: intersect, even in an array formula
        return VALUE
    fn = FUNCTIONS.get(call.name)
    cls = fn.arg_class(i) if fn is not None else REFERENCE
    if ctx == ARRAY or cls == ARRAY:
        return ARRAY
    return ctx if cls == "P" else cls   # passed through (IF's branches): read as the call is


def _contexts(node: Node, ctx: str) -> Iterator[tuple[Node, str]]:
    """Every node with the context it is computed in, parents first."""
    yield node, ctx
    if isinstance(node, Binary):
        yield from _contexts(node.left, _operand(ctx))
        yield from _contexts(node.right, _operand(ctx))
    elif isinstance(node, Unary):
        yield from _contexts(node.arg, _operand(ctx))
    elif isinstance(node, Call):
        for i, a in enumerate(node.args):
            yield from _contexts(a, _argument(node, i, ctx))


def candidates(ast: Node, array: bool = False) -> list[Ref]:
    """The multi-cell references a formula reads as single values, in walk order: in an
    ordinary formula wherever a value belongs, in an array formula only under @."""
    return [n for n, ctx in _contexts(ast, ARRAY if array else VALUE)
            if isinstance(n, Ref) and ctx == VALUE and not _one_cell(n)]


def _one_cell(ref: Ref) -> bool:
    return ref.shape == (1, 1)


def inside(ref: Ref, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per cell (rows[i], cols[i]): does its row or column meet the range?"""
    top, left, bottom, right = ref.bounds(rows, cols)
    one_row, one_col = np.equal(top, bottom), np.equal(left, right)
    in_rows = (top <= rows) & (rows <= bottom)
    in_cols = (left <= cols) & (cols <= right)
    ok = np.where(one_row, in_cols, np.where(one_col, in_rows, in_rows & in_cols))
    return np.broadcast_to(ok, rows.shape)


def _single(ref: Ref) -> Node:
    """The one cell of `ref` in the formula's own row and/or column."""
    h, w = ref.shape
    if h == 1 and ref.r1_abs == ref.r2_abs:           # a row range: the formula's column
        return Ref(ref.sheet, ref.r1, 0, ref.r1, 0, ref.r1_abs, False, ref.r1_abs, False)
    if w == 1 and ref.c1_abs == ref.c2_abs:           # a column range: the formula's row
        return Ref(ref.sheet, 0, ref.c1, 0, ref.c1, False, ref.c1_abs, False, ref.c1_abs)
    return Ref(ref.sheet, 0, 0, 0, 0)


def single_references(ast: Node, array: bool = False) -> Node:
    """`ast` with each computed reference (OFFSET, INDIRECT, the ':' operator between them)
    that it reads as one value put under @ (SINGLE): where such a reference lands is known only
    when it is computed, so it is intersected then. The same object when there is none."""
    def go(node: Node, ctx: str, under_single: bool) -> Node:
        if isinstance(node, Binary):
            left, right = go(node.left, _operand(ctx), False), go(node.right, _operand(ctx), False)
            return node if (left, right) == (node.left, node.right) else Binary(node.op, left, right)
        if isinstance(node, Unary):
            arg = go(node.arg, _operand(ctx), False)
            return node if arg is node.arg else Unary(node.op, arg)
        if not isinstance(node, Call):
            return node
        args = tuple(go(a, _argument(node, i, ctx), node.name == "SINGLE") for i, a in enumerate(node.args))
        out = node if all(x is y for x, y in zip(args, node.args)) else Call(node.name, args)
        if ctx == VALUE and not under_single and node.name in REFERENCE_CALLS:
            return Call("SINGLE", (out,))
        return out

    return go(ast, ARRAY if array else VALUE, False)


def rewrite(ast: Node, hits: tuple[bool, ...], array: bool = False) -> Node:
    """`ast` with its k-th candidate replaced by the cell it intersects (hits[k]) or #VALUE!."""
    it = iter(hits)

    def go(node: Node, ctx: str) -> Node:
        if isinstance(node, Ref):
            if ctx == VALUE and not _one_cell(node):
                return _single(node) if next(it) else ErrorLit("#VALUE!")
            return node
        if isinstance(node, Binary):
            return Binary(node.op, go(node.left, _operand(ctx)), go(node.right, _operand(ctx)))
        if isinstance(node, Unary):
            return Unary(node.op, go(node.arg, _operand(ctx)))
        if isinstance(node, Call):
            return Call(node.name, tuple(go(a, _argument(node, i, ctx)) for i, a in enumerate(node.args)))
        return node      # literals, and array constants (never intersected)

    return go(ast, ARRAY if array else VALUE)


__all__ = ["candidates", "inside", "rewrite", "single_references"]
