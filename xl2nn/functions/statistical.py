"""Statistical functions."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..cells import CellError
from .aggregate import Numbers
from .criteria import AVERAGE, COUNT, MAX, MIN, filled, multiple, single
from .registry import Context, excel, with_errors
from .values import DIV0, EMPTY, NUM, NUM_ERR, TEXT, VALUE, Val, from_objects, to_objects


def _mark(result: Val, where: Callable[[], torch.Tensor], code: CellError, ctx: Context) -> Val:
    """The family cells where `where()` holds become `code`. Eval only: training neither
    checks nor computes the mask (an op in every forward otherwise)."""
    if not ctx.checked:
        return result
    where = where()
    if not bool(where.any()):
        return result
    objs = to_objects(result)
    bad = np.broadcast_to(where.reshape(-1).cpu().numpy(), (objs.shape[0],))
    objs[bad] = code
    return from_objects(objs, ctx.device)


@excel("AVERAGE", "Statistical", min_args=1, args="R")
def average(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    total, count = n.sum(), n.count()
    return with_errors(_mark(Val(total / count, NUM), lambda: count == 0, DIV0, ctx), n.errors, ctx.device)


@excel("MAX", "Statistical", min_args=1, args="R")
def max_(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.extreme(True), NUM), n.errors, ctx.device)


@excel("MIN", "Statistical", min_args=1, args="R")
def min_(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.extreme(False), NUM), n.errors, ctx.device)


@excel("COUNT", "Statistical", differentiable=False, args="R")
def count(args: list[Val | None], ctx: Context) -> Val:
    # COUNT never fails: errors are simply not numbers (in an unchecked run, a computed
    # error is a non-finite number: not counted either).
    n = Numbers(args, ctx)
    if ctx.checked or all(a is None or a.exact for a in args):
        return Val(n.count(), NUM)
    return Val(n.count(finite_only=True), NUM)


@excel("COUNTA", "Statistical", differentiable=False, args="R")
def counta(args: list[Val | None], ctx: Context) -> Val:
    total = None
    for a in args:
        if a is None:
            continue
        c = torch.as_tensor((a.kinds() != EMPTY).sum(axis=(1, 2), keepdims=True).astype(np.float64),
                            device=ctx.device)
        total = c if total is None else total + c
    return Val(total if total is not None else torch.zeros((1, 1, 1), dtype=torch.float64), NUM)


# -- spread: STDEV, VAR and their population / sample forms ------------------------------------

def _squares_about(n: Numbers, mean: torch.Tensor) -> torch.Tensor:
    """Sum of (x - mean)^2 over the numbers, part by part: each part's own squares about its
    own mean plus k·(its mean - mean)^2 (exact, stable, and a range shared by every cell is
    never broadcast against per-cell means)."""
    total = None
    for num, mask in n.parts:
        if mask is None:
            k = torch.full((num.shape[0], 1, 1), float(num.shape[1] * num.shape[2]),
                           dtype=num.dtype, device=num.device)
            x = num
        else:
            k = mask.to(num.dtype).sum(dim=(1, 2), keepdim=True)
            x = torch.where(mask, num, torch.zeros((), dtype=num.dtype, device=num.device))
        c = x.sum(dim=(1, 2), keepdim=True) / k.clamp_min(1.0)
        if mask is not None:
            # Entries left out sit at the part's mean, so they add nothing (and no NaN
            # from a text entry reaches the gradient).
            x = torch.where(mask, num, c)
        s = ((x - c) ** 2).sum(dim=(1, 2), keepdim=True) + k * (c - mean) ** 2
        total = s if total is None else total + s
    return total if total is not None else torch.zeros((1, 1, 1), dtype=torch.float64)


def _spread(args: list[Val | None], ctx: Context, sample: bool, root: bool) -> Val:
    n = Numbers(args, ctx)
    count = n.count()
    mean = n.sum() / count.clamp_min(1.0)
    denom = count - 1.0 if sample else count
    var = _squares_about(n, mean) / denom.clamp_min(1.0)
    result = Val(torch.sqrt(var) if root else var, NUM)
    # Fewer than two numbers for a sample (none for a population): #DIV/0!.
    return with_errors(_mark(result, lambda: denom <= 0, DIV0, ctx), n.errors, ctx.device)


_SPREADS = {  # name: (sample, square root)
    "STDEV": (True, True), "STDEV.S": (True, True), "STDEVP": (False, True), "STDEV.P": (False, True),
    "VAR": (True, False), "VAR.S": (True, False), "VARP": (False, False), "VAR.P": (False, False),
}


def _register_spread(name: str, sample: bool, root: bool) -> None:
    def impl(args: list[Val | None], ctx: Context) -> Val:
        return _spread(args, ctx, sample, root)
    excel(name, "Statistical", min_args=1, args="R")(impl)


for _name, (_sample, _root) in _SPREADS.items():
    _register_spread(_name, _sample, _root)


@excel("MEDIAN", "Statistical", min_args=1, args="R")
def median(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    count = n.count()
    f = max([count.shape[0]] + [num.shape[0] for num, _ in n.parts])
    # Every number of a cell in one row, the left-out entries as +inf so they sort last.
    cols = []
    for num, mask in n.parts:
        x = num if mask is None else torch.where(mask, num, torch.full((), float("inf"), dtype=num.dtype,
                                                                       device=num.device))
        cols.append(x.reshape(x.shape[0], -1).expand(f, -1))
    ordered = torch.sort(torch.cat(cols, dim=1), dim=1).values
    k = count.reshape(-1).expand(f).to(torch.int64)
    lo, hi = ((k - 1).clamp_min(0) // 2).unsqueeze(1), (k // 2).unsqueeze(1)
    mid = (ordered.gather(1, lo) + ordered.gather(1, hi)) / 2
    result = Val(mid.reshape(f, 1, 1), NUM)
    return with_errors(_mark(result, lambda: count == 0, NUM_ERR, ctx), n.errors, ctx.device)


# -- conditional counts, averages and extremes (criteria.py) -------------------------------------

@excel("COUNTIF", "Statistical", min_args=2, max_args=2, differentiable=False, args="RV")
def countif(args: list[Val | None], ctx: Context) -> Val:
    return single(args, COUNT, ctx)


@excel("COUNTIFS", "Statistical", min_args=2, max_args=254, differentiable=False, args="RV" * 127)
def countifs(args: list[Val | None], ctx: Context) -> Val:
    return multiple(args, COUNT, ctx)


@excel("AVERAGEIF", "Statistical", min_args=2, max_args=3, args="RVR")
def averageif(args: list[Val | None], ctx: Context) -> Val:
    return single(args, AVERAGE, ctx)


# The values, then (range, criterion) pairs: "R" + "RV"*127 reads every range whole and
# every criterion as a value.
@excel("AVERAGEIFS", "Statistical", min_args=3, max_args=255, args="R" + "RV" * 127)
def averageifs(args: list[Val | None], ctx: Context) -> Val:
    return multiple(args, AVERAGE, ctx)


@excel("MAXIFS", "Statistical", min_args=3, max_args=255, args="R" + "RV" * 127)
def maxifs(args: list[Val | None], ctx: Context) -> Val:
    return multiple(args, MAX, ctx)


@excel("MINIFS", "Statistical", min_args=3, max_args=255, args="R" + "RV" * 127)
def minifs(args: list[Val | None], ctx: Context) -> Val:
    return multiple(args, MIN, ctx)


@excel("COUNTBLANK", "Statistical", min_args=1, max_args=1, differentiable=False, args="R")
def countblank(args: list[Val | None], ctx: Context) -> Val:
    v = args[0]
    if v is None or not v.is_ref:       # Excel takes a reference only
        return filled(VALUE, (1 if v is None else v.num.shape[0], 1, 1), ctx)
    kinds = v.kinds()
    blank = kinds == EMPTY
    if v.text is not None:              # a formula's "" counts as blank too
        text = np.broadcast_to(v.text, kinds.shape)
        blank = blank | ((kinds == TEXT) & (text == ""))
    counts = blank.sum(axis=(1, 2), keepdims=True).astype(np.float64)
    return Val(torch.as_tensor(counts, device=ctx.device), NUM)
