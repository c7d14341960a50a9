"""Information functions: what kind of value a cell holds.

The IS functions read a value's kind without looking at its number, so an error is an
answer (ISERROR(1/0) is TRUE), never propagated; they run on the kind array alone. An
empty cell is blank; a formula cell never is (the grid stores a formula's blank result
as the number 0), and "" is text.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..cells import CellError
from ..errors import UnsupportedFormula
from .registry import Context, argument, excel
from .values import (BOOL, COMPUTED, EMPTY, ERROR, NA, NUM, TEXT, VALUE, Val, from_objects, scalar, to_objects,
                     unchecked_errors)


def _flags(mask: np.ndarray, ctx: Context) -> Val:
    return Val(torch.as_tensor(np.array(mask), dtype=torch.float64, device=ctx.device), BOOL)


def _codes(v: Val) -> np.ndarray:
    """The error code of each entry ('' where there is none)."""
    kinds = v.kinds()
    if v.text is None:
        return np.full(kinds.shape, "", dtype=object)
    return np.where(kinds == ERROR, np.broadcast_to(v.text, kinds.shape), "")


_KIND_TESTS: dict[str, Callable[[Val], np.ndarray]] = {
    "ISBLANK": lambda v: v.kinds() == EMPTY,
    "ISNUMBER": lambda v: v.kinds() == NUM,        # booleans are not numbers in Excel
    "ISTEXT": lambda v: v.kinds() == TEXT,
    "ISNONTEXT": lambda v: v.kinds() != TEXT,
    "ISLOGICAL": lambda v: v.kinds() == BOOL,
    "ISERROR": lambda v: v.kinds() == ERROR,
    "ISERR": lambda v: (v.kinds() == ERROR) & (_codes(v) != NA.code),
    "ISNA": lambda v: _codes(v) == NA.code,
}


# Unchecked runs keep a computed error as a non-finite number (see values.py): these tests
# read it so. ISNA and ISERR would need the error's code, which such a number does not keep.
_NONFINITE_TESTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ISNUMBER": lambda flags, bad: flags & ~bad,
    "ISERROR": lambda flags, bad: flags | bad,
    "ISNONTEXT": lambda flags, bad: flags,
    "ISBLANK": lambda flags, bad: flags,
    "ISTEXT": lambda flags, bad: flags,
    "ISLOGICAL": lambda flags, bad: flags & ~bad,
}


_NO_CODE = ("{} of an error computed while training: xl2nn keeps no error code there (ISERROR keeps "
            "none either and works)")


def _make_test(name: str, test: Callable[[Val], np.ndarray]) -> None:
    def impl(args: list[Val | None], ctx: Context) -> Val:
        v = argument(args, 0, ctx)
        if not ctx.checked and name not in _NONFINITE_TESTS and (_codes(v) == COMPUTED.code).any():
            raise UnknownErrorCode(_NO_CODE.format(name))      # one that went through an exact path
        if not unchecked_errors(v, ctx):
            return _flags(test(v), ctx)
        kinds = v.kinds()
        bad = torch.as_tensor((kinds == NUM) | (kinds == BOOL), device=v.num.device) & ~torch.isfinite(v.num)
        if name not in _NONFINITE_TESTS:
            if bool(bad.any()):
                raise UnknownErrorCode(_NO_CODE.format(name))
            return _flags(test(v), ctx)
        flags = torch.as_tensor(np.array(test(v)), device=v.num.device)
        return Val(_NONFINITE_TESTS[name](flags, bad).to(torch.float64), BOOL)
    excel(name, "Information", min_args=1, max_args=1, differentiable=False)(impl)


for _name, _test in _KIND_TESTS.items():
    _make_test(_name, _test)


class UnknownErrorCode(UnsupportedFormula):
    """An unchecked run met a function that needs an error's code (ISNA, ISERR)."""


def _parity(x: Any) -> int | CellError:
    """The integer part's parity. Text, even "4", is #VALUE! (as in LibreOffice); a blank
    is 0, even (Excel; LibreOffice says #VALUE!)."""
    if isinstance(x, CellError):
        return x
    if x is None:
        return 0
    if isinstance(x, str):
        return VALUE
    return int(math.trunc(float(x))) % 2


def _even_odd(args: list[Val | None], ctx: Context, odd: bool) -> Val:
    v = argument(args, 0, ctx)
    if v.numeric:
        rem = torch.remainder(torch.trunc(v.num), 2.0)
        out = ((rem != 0) if odd else (rem == 0)).to(torch.float64)
        return Val(out + (rem - rem) if unchecked_errors(v, ctx) else out, BOOL)
    objs = to_objects(v)
    out = np.empty(objs.shape, dtype=object)
    for idx in np.ndindex(*objs.shape):
        p = _parity(objs[idx])
        out[idx] = p if isinstance(p, CellError) else (p == 1) == odd
    return from_objects(out, ctx.device)


@excel("ISEVEN", "Information", min_args=1, max_args=1, differentiable=False)
def iseven(args: list[Val | None], ctx: Context) -> Val:
    return _even_odd(args, ctx, odd=False)


@excel("ISODD", "Information", min_args=1, max_args=1, differentiable=False)
def isodd(args: list[Val | None], ctx: Context) -> Val:
    return _even_odd(args, ctx, odd=True)


@excel("N", "Information", min_args=1, max_args=1)
def n(args: list[Val | None], ctx: Context) -> Val:
    """Numbers stay (with their gradient), booleans are 1/0, text and blanks 0; errors stay."""
    v = argument(args, 0, ctx)
    if v.numeric:
        return Val(v.num, NUM)
    is_text = torch.as_tensor(v.kinds() == TEXT, device=v.num.device)
    num = torch.where(is_text, torch.zeros((), dtype=v.num.dtype, device=v.num.device), v.num)
    if not v.has(ERROR):
        return Val(num, NUM)
    kinds = np.where(v.kinds() == ERROR, ERROR, NUM).astype(np.int8)
    objs = to_objects(Val(num, kinds, v.text))
    return from_objects(objs, ctx.device)


_TYPE_CODES = {NUM: 1.0, EMPTY: 1.0, TEXT: 2.0, BOOL: 4.0, ERROR: 16.0}


@excel("TYPE", "Information", min_args=1, max_args=1, differentiable=False)
def type_(args: list[Val | None], ctx: Context) -> Val:
    """1 number (or blank), 2 text, 4 logical, 16 error, 64 an array of several values.

    Excel's codes; LibreOffice differs (TRUE is a number there, and it says 8 for any
    formula cell)."""
    v = argument(args, 0, ctx)
    f, h, w = v.shape
    if h * w > 1:
        return Val(torch.full((f, 1, 1), 64.0, dtype=torch.float64, device=ctx.device), NUM)
    kinds = v.kinds()
    codes = torch.as_tensor(np.vectorize(_TYPE_CODES.__getitem__, otypes=[np.float64])(kinds), device=ctx.device)
    if unchecked_errors(v, ctx):
        codes = torch.where(torch.isfinite(v.num), codes, torch.full((), 16.0, dtype=codes.dtype, device=ctx.device))
    return Val(codes, NUM)


@excel("NA", "Information", max_args=0, differentiable=False)
def na(args: list[Val | None], ctx: Context) -> Val:
    return scalar(NA, ctx.device)
