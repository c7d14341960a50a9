"""Math & Trig functions."""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import torch

from ..cells import CellError
from .aggregate import Numbers
from .registry import Context, Elementwise, excel, first_error, with_errors
from .values import DIV0, NUM, NUM_ERR, VALUE, Val, from_objects, to_objects


def _safe(fn):
    def run(*xs: float) -> float | CellError:
        try:
            r = fn(*xs)
        except (ValueError, OverflowError, ZeroDivisionError):
            return NUM_ERR
        return NUM_ERR if isinstance(r, float) and (math.isinf(r) or math.isnan(r)) else r
    return run


def _round_half_up(x: float, digits: float) -> float:
    d = int(digits)
    q = Decimal(1).scaleb(-d)
    # repr() gives the shortest decimal that reads back as x: Excel rounds what it shows.
    return float(Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP))


def _log(x: float, base: float = 10.0) -> float:
    return math.log(x) / math.log(base)


def _excel_mod(a: float, b: float) -> float | CellError:
    return DIV0 if b == 0 else a - b * math.floor(a / b)


_UNARY = {
    "EXP": Elementwise(torch.exp, _safe(math.exp), domain_error=lambda x: x > 709.78),
    "LN": Elementwise(torch.log, _safe(math.log), domain_error=lambda x: x <= 0),
    "LOG10": Elementwise(torch.log10, _safe(math.log10), domain_error=lambda x: x <= 0),
    "SQRT": Elementwise(torch.sqrt, _safe(math.sqrt), domain_error=lambda x: x < 0),
    "ABS": Elementwise(torch.abs, abs),
    "TANH": Elementwise(torch.tanh, math.tanh),
    "SIGN": Elementwise(torch.sign, lambda x: float((x > 0) - (x < 0))),
    "INT": Elementwise(torch.floor, lambda x: float(math.floor(x))),
}


def _make_unary(name: str, ew: Elementwise) -> None:
    def impl(args: list[Val | None], ctx: Context) -> Val:
        return ew([_arg(args[0], ctx)], ctx)
    excel(name, "Math & Trig", min_args=1, max_args=1,
          differentiable=name not in ("SIGN", "INT"))(impl)


for _name, _ew in _UNARY.items():
    _make_unary(_name, _ew)


def _arg(v: Val | None, ctx: Context) -> Val:
    if v is None:   # an omitted argument reads as 0
        return Val(torch.zeros((1, 1, 1), dtype=torch.float64, device=ctx.device), NUM)
    return v


_LOG = Elementwise(lambda x, b: torch.log(x) / torch.log(b), _safe(_log),
                   domain_error=lambda x, b: (x <= 0) | (b <= 0) | (b == 1))
_POWER = Elementwise(torch.pow, lambda a, b: _safe(lambda x, y: x ** y)(a, b) if not (a == 0 and b <= 0)
                     else (NUM_ERR if b == 0 else DIV0),
                     domain_error=lambda a, b: ((a == 0) & (b <= 0)) | ((a < 0) & (b != torch.round(b))))
_ROUND = Elementwise(lambda *_: None, _safe(_round_half_up))
_MOD = Elementwise(lambda a, b: a - b * torch.floor(a / b), _excel_mod, domain_error=lambda a, b: b == 0)


@excel("LOG", "Math & Trig", min_args=1, max_args=2)
def log(args: list[Val | None], ctx: Context) -> Val:
    base = args[1] if len(args) > 1 and args[1] is not None else Val(
        torch.full((1, 1, 1), 10.0, dtype=torch.float64, device=ctx.device), NUM)
    return _LOG([_arg(args[0], ctx), base], ctx)


@excel("POWER", "Math & Trig", min_args=2, max_args=2)
def power(args: list[Val | None], ctx: Context) -> Val:
    return _POWER([_arg(args[0], ctx), _arg(args[1], ctx)], ctx)


@excel("MOD", "Math & Trig", min_args=2, max_args=2, differentiable=False)
def mod(args: list[Val | None], ctx: Context) -> Val:
    return _MOD([_arg(args[0], ctx), _arg(args[1], ctx)], ctx)


@excel("ROUND", "Math & Trig", min_args=1, max_args=2, differentiable=False)
def round_(args: list[Val | None], ctx: Context) -> Val:
    # Excel rounds half away from zero on the decimal it displays: only the exact
    # scalar path gets 2.675 -> 2.68. The gradient of a rounded value is zero anyway.
    digits = _arg(args[1] if len(args) > 1 else None, ctx)
    return _ROUND.slow([_arg(args[0], ctx), digits], ctx)


@excel("SUM", "Math & Trig", args="R")
def sum_(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.sum(), NUM), n.errors, ctx.device)


@excel("SUMSQ", "Math & Trig", args="R")
def sumsq(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.sum(lambda x: x * x), NUM), n.errors, ctx.device)


def _array_errors(args: list[Val]) -> np.ndarray | None:
    codes = None
    for a in args:
        e = first_error(a)
        if e is None:
            continue
        codes = e if codes is None else np.where(codes == None, e, codes)  # noqa: E711
    return codes


def _whole_error(v: Val, code: CellError, ctx: Context) -> Val:
    objs = np.empty(v.num.shape, dtype=object)
    objs[...] = code
    return from_objects(objs, ctx.device)


@excel("SUMPRODUCT", "Math & Trig", min_args=1, args="A")
def sumproduct(args: list[Val | None], ctx: Context) -> Val:
    vals = [_arg(a, ctx) for a in args]
    shapes = {v.num.shape[1:] for v in vals}
    f = max(v.num.shape[0] for v in vals)
    if len(shapes) != 1:
        return _whole_error(Val(torch.zeros((f, 1, 1), dtype=torch.float64), NUM), VALUE, ctx)
    nums = []
    for v in vals:
        # Text, booleans and empty entries count as 0 in SUMPRODUCT's arrays.
        k = v.uniform()
        if k == NUM:
            nums.append(v.num)
        else:
            keep = torch.as_tensor(v.kinds() == NUM, device=v.num.device)
            nums.append(torch.where(keep, v.num, torch.zeros((), dtype=v.num.dtype, device=v.num.device)))
    if len(nums) == 2:
        a, b = nums
        h, w = a.shape[1:]
        if a.shape[0] == 1 or b.shape[0] == 1:
            # One side is shared by every cell: a matrix-vector product, no F×k temporary.
            rows, vec = (b, a) if a.shape[0] == 1 else (a, b)
            out = torch.matmul(rows.reshape(rows.shape[0], h * w), vec.reshape(h * w, 1))
            result = out.reshape(-1, 1, 1)
        else:
            result = (a * b).sum(dim=(1, 2), keepdim=True)
    else:
        prod = nums[0]
        for x in nums[1:]:
            prod = prod * x
        result = prod.sum(dim=(1, 2), keepdim=True)
    return with_errors(Val(result, NUM), _array_errors(vals), ctx.device)


@excel("MMULT", "Math & Trig", min_args=2, max_args=2, args="A")
def mmult(args: list[Val | None], ctx: Context) -> Val:
    a, b = _arg(args[0], ctx), _arg(args[1], ctx)
    if a.num.shape[2] != b.num.shape[1] or a.uniform() != NUM or b.uniform() != NUM:
        f = max(a.num.shape[0], b.num.shape[0])
        return _whole_error(Val(torch.zeros((f, a.num.shape[1], b.num.shape[2]), dtype=torch.float64),
                                NUM), VALUE, ctx)
    return Val(torch.matmul(a.num, b.num), NUM)


@excel("TRANSPOSE", "Lookup & Reference", min_args=1, max_args=1, args="A")
def transpose(args: list[Val | None], ctx: Context) -> Val:
    v = _arg(args[0], ctx)
    kind = v.kind.transpose(0, 2, 1) if isinstance(v.kind, np.ndarray) else v.kind
    text = v.text.transpose(0, 2, 1) if v.text is not None else None
    return Val(v.num.transpose(1, 2), kind, text)


__all__ = ["to_objects"]
