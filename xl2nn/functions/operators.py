"""Excel's operators: arithmetic, comparison and & (text join)."""
from __future__ import annotations

import math

import torch

from ..cells import CellError
from .registry import Context, Elementwise
from .values import (BOOL, DIV0, EMPTY, ERROR, NUM, NUM_ERR, TEXT, Val, error_overlay, fit, overlay_errors,
                     past_errors, to_text)


def _div(a: float, b: float) -> float | CellError:
    return DIV0 if b == 0 else a / b


def _pow(a: float, b: float) -> float | CellError:
    if a == 0 and b == 0:
        return NUM_ERR
    if a == 0 and b < 0:
        return DIV0
    try:
        r = a ** b
    except (OverflowError, ZeroDivisionError):
        return NUM_ERR
    if isinstance(r, complex) or math.isinf(r) or math.isnan(r):
        return NUM_ERR
    return r


def _pow_domain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a == 0) & (b <= 0)) | ((a < 0) & (b != torch.round(b)))


ARITHMETIC: dict[str, Elementwise] = {
    "+": Elementwise(torch.add, lambda a, b: a + b),
    "-": Elementwise(torch.sub, lambda a, b: a - b),
    "*": Elementwise(torch.mul, lambda a, b: a * b),
    "/": Elementwise(torch.div, _div, domain_error=lambda a, b: b == 0),
    "^": Elementwise(torch.pow, _pow, domain_error=_pow_domain),
}

UNARY: dict[str, Elementwise] = {
    "-": Elementwise(torch.neg, lambda a: -a),
    "+": Elementwise(lambda a: a, lambda a: a),
    "%": Elementwise(lambda a: a / 100.0, lambda a: a / 100.0),
}

_TORCH_COMPARE = {"=": torch.eq, "<>": torch.ne, "<": torch.lt, ">": torch.gt,
                  "<=": torch.le, ">=": torch.ge}
_PY_COMPARE = {"=": lambda c: c == 0, "<>": lambda c: c != 0, "<": lambda c: c < 0,
               ">": lambda c: c > 0, "<=": lambda c: c <= 0, ">=": lambda c: c >= 0}


def _rank(x: object) -> tuple[int, object]:
    """Excel orders numbers < text < booleans; text compares without case."""
    if isinstance(x, bool):
        return 2, x
    if isinstance(x, (int, float)):
        return 0, float(x)
    return 1, str(x).lower()


def compare_scalars(op: str, a: object, b: object) -> bool:
    # An empty cell takes the type of the other side: 0, "" or FALSE.
    if a is None:
        a = False if isinstance(b, bool) else "" if isinstance(b, str) else 0.0
    if b is None:
        b = False if isinstance(a, bool) else "" if isinstance(a, str) else 0.0
    ra, rb = _rank(a), _rank(b)
    c = (ra > rb) - (ra < rb)
    return _PY_COMPARE[op](c)


def compare(op: str, a: Val, b: Val, ctx: Context) -> Val:
    a, b = fit([a, b])
    ka, kb = a.uniform(), b.uniform()
    # Numbers (and empties, which read as 0) compare as tensors; anything that mixes
    # booleans with numbers, or involves text, goes the exact way.
    fast = {ka, kb} <= {NUM, EMPTY} or (ka == kb == BOOL)
    if fast:
        out = Val(_TORCH_COMPARE[op](a.num, b.num).to(a.num.dtype), BOOL)
        if not ctx.checked:         # a non-finite operand is an error: so is the comparison
            sources = tuple(v.num for v in (a, b) if not v.exact)
            out.poison = (sources, op == "<>") if sources else None
        return out
    # numbers beside error values (a column of #VALUE! compared with 0): in bulk
    shape = tuple(torch.broadcast_shapes(a.num.shape, b.num.shape))
    got = error_overlay([a, b], shape, (NUM, EMPTY)) if a.has(ERROR) or b.has(ERROR) else None
    nums = past_errors([a, b], got[0]) if got is not None else None
    if nums is not None:
        return overlay_errors(_TORCH_COMPARE[op](*nums).to(a.num.dtype), BOOL, *got)
    ew = Elementwise(lambda *_: None, lambda x, y: compare_scalars(op, x, y),
                     result_kind=BOOL, coerce=lambda x: x)
    return ew.slow([a, b], ctx)


def concat(a: Val, b: Val, ctx: Context) -> Val:
    def join(x: object, y: object) -> object:
        tx, ty = to_text(x), to_text(y)
        if isinstance(tx, CellError):
            return tx
        if isinstance(ty, CellError):
            return ty
        return tx + ty
    return Elementwise(lambda *_: None, join, result_kind=TEXT, coerce=lambda x: x).slow([a, b], ctx)


def binary(op: str, a: Val, b: Val, ctx: Context) -> Val:
    if op in ARITHMETIC:
        return ARITHMETIC[op]([a, b], ctx)
    if op in _TORCH_COMPARE:
        return compare(op, a, b, ctx)
    if op == "&":
        return concat(a, b, ctx)
    raise ValueError(op)


def unary(op: str, a: Val, ctx: Context) -> Val:
    return UNARY[op]([a], ctx)


OPERATOR_NAMES = sorted(ARITHMETIC) + sorted(_TORCH_COMPARE) + ["&", "unary -", "%"]
__all__ = ["binary", "unary", "compare_scalars", "OPERATOR_NAMES"]
