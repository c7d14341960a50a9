"""What SUM, AVERAGE, MAX and the like read from their arguments.

References and arrays contribute only their numbers (text, booleans and empty cells
are skipped); a value typed straight into the call is coerced, so SUM(TRUE,"2") is 3.
Any error among the arguments becomes the result, cell by cell.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cells import CellError
from .registry import Context
from .values import EMPTY, ERROR, NUM, TEXT, Val, to_number, to_objects


class Numbers:
    """The numbers an aggregate sees, per family cell: values plus an include mask."""

    def __init__(self, args: list[Val | None], ctx: Context, *, count_text: bool = False) -> None:
        self.parts: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.errors: np.ndarray | None = None
        for a in args:
            if a is None:
                continue
            self._add(a, ctx)

    def _add(self, a: Val, ctx: Context) -> None:
        direct = not a.is_ref and a.num.shape[1:] == (1, 1)
        if a.has(ERROR):
            self._note_errors(a)
        if direct and a.has(TEXT):
            objs = to_objects(a)
            conv = np.vectorize(lambda x: x if isinstance(x, CellError) else to_number(x), otypes=[object])(objs)
            errs = np.vectorize(lambda x: x.code if isinstance(x, CellError) else None, otypes=[object])(conv)
            self._merge_errors(errs.reshape(errs.shape[0], -1)[:, 0])
            nums = np.vectorize(lambda x: 0.0 if isinstance(x, CellError) else float(x))(conv)
            self.parts.append((torch.as_tensor(nums, dtype=a.num.dtype, device=a.num.device), None))
            return
        kind = a.uniform()
        if direct:
            # Typed-in numbers and booleans count as numbers. An empty cell can only arrive
            # here through IF/IFERROR/CHOOSE, which in Excel return the reference itself:
            # skipped, as in a range (MIN(IF(c,A1,9),5) with A1 blank is 5, not 0).
            mask = None
            if kind is None or kind in (ERROR, EMPTY):      # mixed kinds: look entry by entry
                kinds = a.kinds()
                skip = (kinds == ERROR) | ((kinds == EMPTY) & (not a.blank_is_value))
                mask = torch.as_tensor(~skip, device=a.num.device) if skip.any() else None
            self.parts.append((a.num, mask))
            return
        if kind == NUM:
            self.parts.append((a.num, None))
        elif kind is not None:
            self.parts.append((a.num, torch.zeros(a.num.shape, dtype=torch.bool, device=a.num.device)))
        else:
            self.parts.append((a.num, torch.as_tensor(a.kinds() == NUM, device=a.num.device)))

    def _note_errors(self, a: Val) -> None:
        from .registry import first_error
        self._merge_errors(first_error(a))

    def _merge_errors(self, codes: np.ndarray | None) -> None:
        if codes is None:
            return
        if self.errors is None:
            self.errors = codes.copy()
            return
        if len(codes) > len(self.errors):
            self.errors = np.broadcast_to(self.errors, codes.shape).copy()
        for i in range(len(self.errors)):
            if self.errors[i] is None:
                self.errors[i] = codes[i if len(codes) > 1 else 0]

    def sum(self, fn=lambda x: x) -> torch.Tensor:
        total = None
        for num, mask in self.parts:
            x = fn(num)
            if mask is not None:
                x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
            s = x.sum(dim=(1, 2), keepdim=True)
            total = s if total is None else total + s
        return total if total is not None else torch.zeros((1, 1, 1), dtype=torch.float64)

    def count(self, finite_only: bool = False) -> torch.Tensor:
        total = None
        for num, mask in self.parts:
            if finite_only:
                mask = torch.isfinite(num) if mask is None else mask & torch.isfinite(num)
            if mask is None:
                c = torch.full((num.shape[0], 1, 1), float(num.shape[1] * num.shape[2]),
                               dtype=num.dtype, device=num.device)
            else:
                c = mask.to(num.dtype).sum(dim=(1, 2), keepdim=True)
            total = c if total is None else total + c
        return total if total is not None else torch.zeros((1, 1, 1), dtype=torch.float64)

    def extreme(self, largest: bool) -> torch.Tensor:
        fill = float("-inf") if largest else float("inf")
        best = None
        for num, mask in self.parts:
            x = num if mask is None else torch.where(mask, num, torch.full((), fill, dtype=num.dtype,
                                                                           device=num.device))
            m = x.amax(dim=(1, 2), keepdim=True) if largest else x.amin(dim=(1, 2), keepdim=True)
            best = m if best is None else (torch.maximum(best, m) if largest else torch.minimum(best, m))
        if best is None:
            return torch.zeros((1, 1, 1), dtype=torch.float64)
        # No numbers at all gives 0 in Excel.
        return torch.where(torch.isinf(best) & (best == fill), torch.zeros_like(best), best)


__all__ = ["Numbers"]
