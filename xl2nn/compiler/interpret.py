"""Evaluate one family's AST over all its cells at once.

The same interpreter runs the whole-workbook recalculation (references read from
NumPy grids) and the compiled module's forward (references read from producer
tensors): only the `resolve` callback differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..formula.ast import ArrayLit, Binary, Boolean, Call, ErrorLit, Missing, Node, Number, Ref, Text, Unary
from ..functions import FUNCTIONS, binary, unary
from ..functions.arrays import LAZY
from ..functions.rounding import fixed_decimals, text_value_t
from ..functions.values import NUM, Val, from_objects, scalar, to_objects
from ..cells import CellError
from .hostread import HostRead
from ..errors import UnsupportedFormula
from ..functions.registry import Function
from ..ir.references import is_reference_call
from .references import Where, is_special, special_value


@dataclass
class EvalContext:
    resolve: Callable[[Ref], Val]
    device: torch.device
    checked: bool = True
    memo: dict[Ref, Val] = field(default_factory=dict)
    literals: dict[Node, Val] | None = None   # cache of constant leaves, kept across calls
    where: Where | None = None      # the family's cells and how to read computed references
    random: bool = False            # RAND() draws afresh (training with dropout masks)


def evaluate(node: Node, ctx: EvalContext, keep_poison: bool = False) -> Val:
    """The node's value over the family; a comparison's pending error check (Val.poison) is
    kept only where the caller asks (IF's condition), else folded in."""
    v = _evaluate(node, ctx)
    return v if keep_poison or v.poison is None else v.settled()


def _random(ctx: EvalContext) -> Val:
    """RAND() over the family's cells: one uniform draw in [0, 1) per cell, on the device, from
    torch's generator (seeded by train). A traced program draws anew on every call."""
    cells = len(ctx.where.rows) if ctx.where is not None else 1
    return Val(torch.rand((cells, 1, 1), dtype=torch.float64, device=ctx.device), NUM)


def _evaluate(node: Node, ctx: EvalContext) -> Val:
    if isinstance(node, Ref):
        v = ctx.memo.get(node)
        if v is None:
            v = ctx.resolve(node)
            ctx.memo[node] = v
        return v
    if isinstance(node, Binary):
        left = evaluate(node.left, ctx)
        if node.op == "^" and isinstance(node.right, Number) and node.right.value == 2.0 and left.numeric:
            # Squared error is everywhere: x*x has the cheaper backward and no pow domain checks.
            return _finite(Val(left.num * left.num, NUM), ctx)
        return _finite(binary(node.op, left, evaluate(node.right, ctx), ctx), ctx)
    if isinstance(node, Unary):
        return _finite(unary(node.op, evaluate(node.arg, ctx), ctx), ctx)
    if isinstance(node, Call):
        if ctx.where is not None and is_special(node):      # OFFSET, INDIRECT, ROW, ...
            try:
                return _finite(special_value(node, ctx.where, lambda n: evaluate(n, ctx)), ctx)
            except HostRead as exc:     # a position that depends on the parameters, in a trace
                exc.function = exc.function or node.name
                raise
        if node.name == "RAND" and ctx.random and not node.args:
            return _random(ctx)
        lazy = LAZY.get(node.name)
        if lazy is not None:        # BYROW, MAP, REDUCE, ...: they apply their LAMBDA themselves
            try:
                return _finite(lazy(node, ctx, evaluate), ctx)
            except HostRead as exc:
                exc.function = exc.function or node.name
                raise
        fn = FUNCTIONS.get(node.name)
        if fn is None:
            raise KeyError(node.name)   # compile() reports these before evaluating anything
        if node.name == "VALUE" and not ctx.checked:
            shown = _text_round_trip(node, ctx)
            if shown is not None:
                return shown
        args = [None if isinstance(a, Missing) else evaluate(a, ctx, keep_poison=(i == 0 and fn.name == "IF"))
                for i, a in enumerate(node.args)]
        if ctx.where is not None:
            _one_reference_each(node, fn, args)
        if not fn.min_args <= len(args) <= fn.max_args:
            return _literal(ErrorLit("#VALUE!"), ctx)
        try:
            return _finite(fn.impl(args, ctx), ctx)
        except HostRead as exc:         # name the innermost function that left torch
            exc.function = exc.function or node.name
            raise
    return _literal(node, ctx)


def _one_reference_each(node: Call, fn: Function, args: list[Val | None]) -> None:
    """SUM(OFFSET(A1,{0;1;2},0)) is SUM of each of three references in Excel, an array of
    sums: not computed (its entries would be summed together). An argument read entry by entry
    (N(OFFSET(A1,{0;1;2},0)), an operator) takes their values."""
    for i, (a, v) in enumerate(zip(node.args, args)):
        if v is not None and not v.is_ref and fn.arg_class(i) in "RA" and is_reference_call(a):
            raise UnsupportedFormula(f"{fn.name} of an array of references (one {a.name} per entry)")


def _text_round_trip(node: Call, ctx: EvalContext) -> Val | None:
    """VALUE(TEXT(x, "0.00")) of numbers, in unchecked runs (training): its torch form, so
    that rounding by formatting traces. Eval and verify take the text path, exactly."""
    arg = node.args[0] if len(node.args) == 1 else None
    if not (isinstance(arg, Call) and arg.name == "TEXT" and len(arg.args) == 2 and isinstance(arg.args[1], Text)):
        return None
    decimals = fixed_decimals(arg.args[1].value)
    if decimals is None:
        return None
    x = evaluate(arg.args[0], ctx)
    return Val(text_value_t(x.num, decimals), NUM) if x.uniform() == NUM else None


def _finite(v: Val, ctx: EvalContext) -> Val:
    """Excel has no infinite numbers: one past its range (1E+200*1E+200, SUMSQ(1E+200), a
    variance that overflows) is #NUM!, whichever torch form made it. Checked runs only;
    training watches its loss instead."""
    if not ctx.checked:
        return v
    bad = ~torch.isfinite(v.num)
    if isinstance(v.kind, np.ndarray) or v.kind != NUM:
        if not v.has(NUM):
            return v
        bad = bad & torch.as_tensor(v.kinds() == NUM, device=v.num.device)
    if not bool(bad.any()):
        return v
    objs = to_objects(v)
    objs[np.broadcast_to(bad.cpu().numpy(), objs.shape)] = CellError("#NUM!")
    return from_objects(objs, ctx.device)


def _literal(node: Node, ctx: EvalContext) -> Val:
    if ctx.literals is not None and node in ctx.literals:
        return ctx.literals[node]
    if isinstance(node, Number):
        v = scalar(node.value, ctx.device)
    elif isinstance(node, Text):
        v = scalar(node.value, ctx.device)
    elif isinstance(node, Boolean):
        v = scalar(node.value, ctx.device)
    elif isinstance(node, ErrorLit):
        v = scalar(CellError(node.code), ctx.device)
    elif isinstance(node, Missing):
        v = scalar(None, ctx.device)
    elif isinstance(node, ArrayLit):
        objs = np.empty((1, len(node.rows), len(node.rows[0])), dtype=object)
        for i, row in enumerate(node.rows):
            for j, item in enumerate(row):
                if isinstance(item, Unary) and isinstance(item.arg, Number):
                    item = Number(-item.arg.value if item.op == "-" else item.arg.value)
                objs[0, i, j] = _literal_value(item)
        v = from_objects(objs, ctx.device)
    else:
        raise TypeError(f"cannot evaluate {node!r}")
    v.exact = True
    if ctx.literals is not None:
        ctx.literals[node] = v
    return v


def _literal_value(node: Node) -> object:
    if isinstance(node, (Number, Text, Boolean)):
        return node.value
    if isinstance(node, ErrorLit):
        return CellError(node.code)
    return CellError("#VALUE!")
