"""Logical functions."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..cells import CellError
from .registry import Context, Elementwise, argument, excel
from .values import (BOOL, ERROR, NUM, VALUE, Val, error_overlay, fit, from_objects, past_errors, to_bool,
                     to_objects, unchecked_errors)


def _const(value: float, kind: int, ctx: Context) -> Val:
    return Val(torch.full((1, 1, 1), value, dtype=torch.float64, device=ctx.device), kind)


@excel("IF", "Logical", min_args=1, max_args=3, args="VPP")
def if_(args: list[Val | None], ctx: Context) -> Val:
    cond = argument(args, 0, ctx, omitted=False)
    # A branch the call stops before is TRUE (then) or FALSE (else): IF(c, x) gives FALSE; one
    # written but left empty is 0: IF(c, x,) gives 0.
    yes = argument(args, 1, ctx, True, omitted=0.0)
    no = argument(args, 2, ctx, False, omitted=0.0)
    cond, yes, no = fit([cond, yes, no])
    if cond.poison is not None and not cond.numeric:
        cond = cond.settled()
    if cond.numeric and cond.poison is None and not ctx.checked and not cond.exact:
        cond = replace(cond, poison=((cond.num,), True))  # a non-finite condition is an error (NaN != 0)
    if cond.numeric:
        out = _select(cond, yes, no)
        if cond.poison is None:
            return out
        # A non-finite operand of the comparison is an error, and so is IF's result. Torch
        # already gives that where the branch picked for it is the operand itself.
        sources, nan_truth = cond.poison
        picked = (yes if nan_truth else no).num
        for s in sources:
            if s is not picked:
                out.num = out.num + (s - s)
        return out
    if cond.poison is None:
        # a condition of numbers and error values (IF(x<0,0,x) over a column of #VALUE!): the
        # error entries give their error, the rest select as tensors
        shape = tuple(torch.broadcast_shapes(cond.num.shape, yes.num.shape, no.num.shape))
        got = error_overlay([cond], shape)
        nums = past_errors([cond], got[0]) if got is not None else None
        if nums is not None:
            mask, codes = got
            out = _select(Val(nums[0], NUM), yes, no)
            num = torch.where(torch.from_numpy(mask).to(out.num.device), float("nan"), out.num.expand(shape))
            kind = np.where(mask, ERROR, np.broadcast_to(out.kinds(), shape)).astype(np.int8)
            text = np.where(mask, codes, np.broadcast_to(out.text, shape) if out.text is not None else None)
            return Val(num, kind, text)
    return _select_slow(cond, yes, no, ctx)


def _select(cond: Val, yes: Val, no: Val) -> Val:
    """IF over a numeric condition: a torch where, and the kinds beside it."""
    c = cond.num != 0
    num = torch.where(c, yes.num, no.num)
    ky, kn = yes.uniform(), no.uniform()
    if ky is not None and ky == kn and yes.text is None and no.text is None:
        return Val(num, ky)
    cn = np.broadcast_to(c.cpu().numpy(), num.shape)
    kind = np.where(cn, np.broadcast_to(yes.kinds(), num.shape), np.broadcast_to(no.kinds(), num.shape))
    text = None
    if yes.text is not None or no.text is not None:
        ty = np.broadcast_to(yes.text if yes.text is not None else np.empty((1, 1, 1), object), num.shape)
        tn = np.broadcast_to(no.text if no.text is not None else np.empty((1, 1, 1), object), num.shape)
        text = np.where(cn, ty, tn)
    return Val(num, kind.astype(np.int8), text)


def _select_slow(cond: Val, yes: Val, no: Val, ctx: Context) -> Val:
    # Cell by cell: only the condition's error and the chosen branch's matter (an error in
    # the branch not taken must not leak, as a generic elementwise loop would let it).
    shape = torch.broadcast_shapes(cond.num.shape, yes.num.shape, no.num.shape)
    c_o, y_o, n_o = (np.broadcast_to(to_objects(v), shape) for v in (cond, yes, no))
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        b = to_bool(c_o[idx])
        out[idx] = b if isinstance(b, CellError) else (y_o[idx] if b else n_o[idx])
    return from_objects(out, ctx.device)


def _logic(args: list[Val | None], ctx: Context, is_and: bool) -> Val:
    vals = [a for a in args if a is not None]
    f = max((v.num.shape[0] for v in vals), default=1)
    out = np.empty((f, 1, 1), dtype=object)
    objs = [to_objects(v) for v in vals] if not all(v.uniform() in (NUM, BOOL) for v in vals) else None
    if objs is None:
        acc = None
        for v in vals:
            b = (v.num != 0)
            red = b.all(dim=1, keepdim=True).all(dim=2, keepdim=True) if is_and else \
                b.any(dim=1, keepdim=True).any(dim=2, keepdim=True)
            acc = red if acc is None else (acc & red if is_and else acc | red)
        return _poisoned(Val(acc.to(torch.float64), BOOL), vals, ctx)
    for i in range(f):
        seen: list[bool] = []
        err = None
        for v, o in zip(vals, objs):
            block = o[min(i, o.shape[0] - 1)]
            for x in block.reshape(-1):
                if isinstance(x, CellError):
                    err = err or x
                elif isinstance(x, bool) or isinstance(x, (int, float)):
                    seen.append(bool(x))
                elif isinstance(x, str) and not v.is_ref and block.size == 1:
                    b = to_bool(x)
                    if isinstance(b, CellError):
                        err = err or b
                    else:
                        seen.append(b)
        if err is not None:
            out[i, 0, 0] = err
        elif not seen:
            out[i, 0, 0] = VALUE
        else:
            out[i, 0, 0] = all(seen) if is_and else any(seen)
    return from_objects(out, ctx.device)


def _poisoned(out: Val, vals: list[Val], ctx: Context) -> Val:
    """Unchecked runs: an error (non-finite entry) among the arguments is the result."""
    for v in vals:
        if unchecked_errors(v, ctx):
            out.num = out.num + (v.num - v.num).sum(dim=(1, 2), keepdim=True)
    return out


@excel("AND", "Logical", min_args=1, differentiable=False, args="R")
def and_(args: list[Val | None], ctx: Context) -> Val:
    return _logic(args, ctx, True)


@excel("OR", "Logical", min_args=1, differentiable=False, args="R")
def or_(args: list[Val | None], ctx: Context) -> Val:
    return _logic(args, ctx, False)


_NOT = Elementwise(lambda x: (x == 0).to(torch.float64), lambda b: not b, result_kind=BOOL, coerce=to_bool)


@excel("NOT", "Logical", min_args=1, max_args=1, differentiable=False)
def not_(args: list[Val | None], ctx: Context) -> Val:
    v = argument(args, 0, ctx, omitted=False)
    out = _NOT([v], ctx)
    return _poisoned(out, [v], ctx) if out.numeric else out


@excel("IFERROR", "Logical", min_args=2, max_args=2, args="PP")
def iferror(args: list[Val | None], ctx: Context) -> Val:
    value, fallback = argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)
    is_err = torch.as_tensor(value.kinds() == ERROR, device=ctx.device)
    if unchecked_errors(value, ctx):
        is_err = is_err | ~torch.isfinite(value.num)
    elif not value.has(ERROR):
        return value
    return if_([Val(is_err.to(torch.float64), BOOL), fallback, value], ctx)


@excel("TRUE", "Logical", max_args=0, differentiable=False)
def true_(args: list[Val | None], ctx: Context) -> Val:
    return _const(1.0, BOOL, ctx)


@excel("FALSE", "Logical", max_args=0, differentiable=False)
def false_(args: list[Val | None], ctx: Context) -> Val:
    return _const(0.0, BOOL, ctx)


@excel("SINGLE", "Logical", min_args=1, max_args=1)
def single(args: list[Val | None], ctx: Context) -> Val:
    # The @ operator. A range under it was already narrowed to the formula's row or column
    # (implicit intersection, decided when the formula was grouped); any other array gives
    # its first entry, as in Excel.
    v = argument(args, 0, ctx, omitted=0.0)
    kind = v.kind[:, :1, :1] if isinstance(v.kind, np.ndarray) else v.kind
    return Val(v.num[:, :1, :1], kind, None if v.text is None else v.text[:, :1, :1], v.is_ref)


@excel("MAP", "Logical", min_args=1, max_args=1, args="A")
def map_(args: list[Val | None], ctx: Context) -> Val:
    # The parser inlined the LAMBDA with its parameter bound to the whole array (it accepts
    # only bodies that work entry by entry), so the mapped array is the body's value.
    return argument(args, 0, ctx, omitted=0.0)
