"""Statistical functions."""
from __future__ import annotations

import numpy as np
import torch

from .aggregate import Numbers
from .registry import Context, excel, with_errors
from .values import DIV0, EMPTY, NUM, Val, from_objects, to_objects


@excel("AVERAGE", "Statistical", min_args=1, args="R")
def average(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    total, count = n.sum(), n.count()
    result = Val(total / count, NUM)
    if ctx.checked and bool((count == 0).any()):
        objs = to_objects(result)
        objs[(count == 0).reshape(-1).cpu().numpy()] = DIV0
        result = from_objects(objs, ctx.device)
    return with_errors(result, n.errors, ctx.device)


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
    # COUNT never fails: errors are simply not numbers.
    n = Numbers(args, ctx)
    return Val(n.count(), NUM)


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
