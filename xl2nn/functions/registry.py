"""The function table and the two ways an elementwise function runs.

Every Excel function is registered once. Elementwise ones give a torch form (fast,
differentiable, used whenever the inputs are all numeric) and a scalar Python form
(Excel's exact semantics on text, booleans and errors; used otherwise, and as the
reference the torch form is tested against).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from ..cells import CellError
from .values import (ERROR, NUM, Val, error_overlay, fit, from_objects, overlay_errors, past_errors, scalar,
                     to_number, to_objects)


class Context(Protocol):
    device: torch.device
    checked: bool        # eval/verify: detect Excel errors exactly; training: skip the checks


Impl = Callable[[list[Val | None], Context], Val]


@dataclass
class Function:
    name: str
    category: str
    impl: Impl
    differentiable: bool = True
    min_args: int = 0
    max_args: int = 255
    # How each argument is read, Excel's parameter classes (the last letter repeats):
    # V value: a range given here is implicitly intersected with the formula's cell in an
    #   ordinary (non-array) formula; R reference: a range is taken whole, but an expression
    #   is still computed as a value; A array: everything inside is computed as arrays;
    #   P passed through: returned as the result (IF's branches), so read as the call is.
    args: str = "V"

    def arg_class(self, i: int) -> str:
        return self.args[min(i, len(self.args) - 1)]


FUNCTIONS: dict[str, Function] = {}

# Excel recomputes these on every change (random numbers, the clock, the environment). xl2nn
# does not: their cells keep the workbook's cached values, a snapshot, and a model may read
# them only as constants. (OFFSET and INDIRECT, volatile to Excel too, are computed: see
# functions/reference.py.)
VOLATILE = frozenset({"RAND", "RANDBETWEEN", "RANDARRAY", "NOW", "TODAY", "CELL", "INFO"})


def excel(name: str, category: str, *, min_args: int = 0, max_args: int = 255,
          differentiable: bool = True, args: str = "V") -> Callable[[Impl], Impl]:
    def register(fn: Impl) -> Impl:
        assert name not in FUNCTIONS, f"{name} registered twice"
        assert set(args) <= set("VRAP"), args
        FUNCTIONS[name] = Function(name, category, fn, differentiable, min_args, max_args, args)
        return fn
    return register


@dataclass
class Elementwise:
    """A function applied entry by entry, numbers in, one value out."""

    torch_fn: Callable[..., torch.Tensor]
    scalar_fn: Callable[..., object]
    # Entries where the torch form would differ from Excel (e.g. LN of x <= 0): any
    # such entry sends the whole block down the exact scalar path.
    domain_error: Callable[..., torch.Tensor] | None = None
    result_kind: int = NUM
    # How each argument's entries are read: one coercion for all, or one per argument.
    coerce: Callable[[object], object] | tuple[Callable[[object], object], ...] = field(default=to_number)

    def __call__(self, args: list[Val], ctx: Context) -> Val:
        args = fit(args)
        if all(a.numeric for a in args):
            nums = [a.num for a in args]
            if self.domain_error is None or (ctx.checked and not bool(self.domain_error(*nums).any())):
                return Val(self.torch_fn(*nums), self.result_kind)
            if not ctx.checked:
                return Val(self._guarded(nums), self.result_kind)
        return self._past_errors(args, ctx) or self.slow(args, ctx)

    def _past_errors(self, args: list[Val], ctx: Context) -> Val | None:
        """Numbers with error values among them, in bulk: each error entry passes the first
        argument's error on, the rest is computed as tensors. None: the scalar path decides
        (text to coerce, a domain error, a non-finite number)."""
        coerce = self.coerce if isinstance(self.coerce, tuple) else (self.coerce,) * len(args)
        if any(how is not to_number for how in coerce):
            return None
        shape = tuple(torch.broadcast_shapes(*(a.num.shape for a in args)))
        got = error_overlay(args, shape)
        if got is None or not got[0].any():
            return None
        mask, codes = got
        nums = past_errors(args, mask)
        if nums is None:
            return None
        if self.domain_error is not None:
            m = torch.from_numpy(mask).to(nums[0].device)
            if bool((self.domain_error(*nums) & ~m).any()):
                return None
        return overlay_errors(self.torch_fn(*nums), self.result_kind, mask, codes)

    def _guarded(self, nums: list[torch.Tensor]) -> torch.Tensor:
        """Unchecked runs: NaN (an error, see values.py) where Excel gives one, never inf (1/0
        then 1/inf would be a silent 0), and where an input already is an error (an overflow's
        inf: 1/(1E200*1E200) is #NUM!, not 0). The function sees 1 there instead, so that its
        gradient stays finite for an IFERROR that picks the other branch."""
        bad = self.domain_error(*nums)
        for x in nums:
            bad = bad | ~torch.isfinite(x)
        one = torch.ones((), dtype=nums[0].dtype, device=nums[0].device)
        safe = [torch.where(bad, one, x) for x in nums]
        return torch.where(bad, torch.full((), float("nan"), dtype=nums[0].dtype, device=nums[0].device),
                           self.torch_fn(*safe))

    def slow(self, args: list[Val], ctx: Context) -> Val:
        args = fit(args)
        shape = torch.broadcast_shapes(*(a.num.shape for a in args))
        objs = [np.broadcast_to(to_objects(a), shape) for a in args]
        coerce = self.coerce if isinstance(self.coerce, tuple) else (self.coerce,) * len(args)
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            coerced = []
            err = None
            for o, how in zip(objs, coerce):
                c = how(o[idx])
                if isinstance(c, CellError):
                    err = c
                    break
                coerced.append(c)
            out[idx] = err if err is not None else self.scalar_fn(*coerced)
        return from_objects(out, ctx.device)


def argument(args: list[Val | None], i: int, ctx: Context, missing: object = None,
             omitted: object = None) -> Val:
    """Argument i: `missing` where the call stops before it, `omitted` where it is written
    but left out; by default an empty value (INDEX(A1:C3,,2): the row is 0; LEFT("abc",)
    takes 0 characters), while most math functions read an omitted argument as the number 0."""
    if i >= len(args):
        return scalar(missing, ctx.device)
    a = args[i]
    return a if a is not None else scalar(omitted, ctx.device)


def first_error(v: Val, axes: tuple[int, ...] = (1, 2)) -> np.ndarray | None:
    """Per family cell, the first error code over the given axes (row-major), or None."""
    if not v.has(ERROR):
        return None
    kinds = v.kinds()
    text = np.broadcast_to(v.text, kinds.shape) if v.text is not None else None
    f = kinds.shape[0]
    out = np.empty((f,), dtype=object)
    for i in range(f):
        hits = np.argwhere(kinds[i] == ERROR)
        out[i] = text[i][tuple(hits[0])] if len(hits) and text is not None else None
    return out


def with_errors(result: Val, codes: np.ndarray | None, device: torch.device) -> Val:
    """Mark family cells whose inputs held an error (codes[i] not None) as that error."""
    if codes is None or all(c is None for c in codes):
        return result
    objs = to_objects(result)
    if len(codes) == 1 and len(objs) > 1:      # an error in a part shared by every cell: all of them
        codes = np.repeat(codes, len(objs))
    for i, code in enumerate(codes):
        if code is not None:
            objs[i] = CellError(code)
    return from_objects(objs, device)
