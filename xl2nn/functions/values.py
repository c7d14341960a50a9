"""How Excel values live in tensors.

A `Val` is the value of one formula evaluated over a family of F cells at once:
`num` is a float64 tensor of shape (F, h, w), where h×w is the array each cell sees
(1×1 for a plain scalar; F may be 1 when every cell sees the same thing).
`kind` says what each entry is: one int for the whole block (the usual, cheap case)
or an int8 NumPy array of num's shape. Text and error entries keep their string in
`text`; their `num` is NaN. Empty cells are 0 and booleans 1/0 in `num`, which is
exactly how Excel's arithmetic sees them.

Training runs unchecked (no per-entry error bookkeeping: the kinds of computed values are
not looked at). There an error is a non-finite number: torch's NaN and inf flow on through
arithmetic, and the functions that look at errors (IFERROR, ISERROR, IF's condition,
comparisons, COUNT, AND/OR/NOT) read a non-finite entry as an error, so no error turns
silently into a valid number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cells import CellError, CellValue
from .numtext import parse_number

NUM, BOOL, TEXT, ERROR, EMPTY = 0, 1, 2, 3, 4
NUMERIC_KINDS = (NUM, BOOL, EMPTY)
DTYPE = torch.float64

VALUE = CellError("#VALUE!")
DIV0 = CellError("#DIV/0!")
NA = CellError("#N/A")
NUM_ERR = CellError("#NUM!")
NAME = CellError("#NAME?")
REF = CellError("#REF!")
# An error an unchecked run computed (a non-finite number): which one is not kept. Never
# written to a cell: checked runs (eval, verify, write-back) have no non-finite numbers.
COMPUTED = CellError("#COMPUTED!")


@dataclass
class Val:
    num: torch.Tensor
    kind: int | np.ndarray
    text: np.ndarray | None = None
    is_ref: bool = False        # came straight from a reference (matters to SUM & co.)
    # A blank handed on as a value (VLOOKUP of an empty cell), not a reference to an empty
    # cell (IF, INDEX): SUM, MIN, COUNT ... given it directly count it as 0.
    blank_is_value: bool = False
    # Entries known exactly (a literal, constant cells): a NUM entry is a finite number. A
    # computed value in an unchecked run may hold non-finite numbers standing for errors.
    exact: bool = False
    # Unchecked runs: a comparison's operands, any non-finite entry of which makes the result
    # an error, and the truth torch gives such an entry (False for all but <>). Kept apart so
    # that IF can skip the check when the branch it then picks is that operand itself
    # (IF(x<0,0,x) is already NaN for a NaN x); `settled` adds it to the number otherwise.
    poison: tuple[tuple[torch.Tensor, ...], bool] | None = None

    def settled(self) -> "Val":
        """The value with any pending poison folded into its number (x - x: 0, or NaN)."""
        if self.poison is None:
            return self
        num = self.num
        for s in self.poison[0]:
            num = num + (s - s)
        return Val(num, self.kind, self.text, self.is_ref, self.blank_is_value, self.exact)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.num.shape)  # type: ignore[return-value]

    def kinds(self) -> np.ndarray:
        if isinstance(self.kind, np.ndarray):
            return np.broadcast_to(self.kind, self.num.shape)
        return np.full(self.num.shape, self.kind, dtype=np.int8)

    @property
    def numeric(self) -> bool:
        """No text or error anywhere: the tensor alone carries the value."""
        if isinstance(self.kind, np.ndarray):
            return bool(np.isin(self.kind, NUMERIC_KINDS).all())
        return self.kind in NUMERIC_KINDS

    def has(self, kind: int) -> bool:
        if isinstance(self.kind, np.ndarray):
            return bool((self.kind == kind).any())
        return self.kind == kind

    def uniform(self) -> int | None:
        """The one kind of every entry, or None when they differ."""
        if not isinstance(self.kind, np.ndarray):
            return self.kind
        flat = self.kind.reshape(-1)
        if flat.size and (flat == flat[0]).all():
            return int(flat[0])
        return None


def unchecked_errors(v: Val, ctx: Any) -> bool:
    """Whether v may hold errors as non-finite numbers: a computed value in an unchecked run."""
    return not ctx.checked and not v.exact and (v.has(NUM) or v.has(BOOL))


def scalar(value: CellValue, device: torch.device | str = "cpu") -> Val:
    """A literal as a 1×1×1 block."""
    return from_objects(np.array([[[value]]], dtype=object), device)


def from_objects(objs: np.ndarray, device: torch.device | str = "cpu") -> Val:
    """Python cell values (3-D object array) -> Val. Used off the hot path."""
    flat = objs.reshape(-1)
    num = np.empty(flat.shape, dtype=np.float64)
    kind = np.empty(flat.shape, dtype=np.int8)
    text = np.empty(flat.shape, dtype=object)
    any_text = False
    for i, v in enumerate(flat):
        if v is None:
            num[i], kind[i] = 0.0, EMPTY
        elif isinstance(v, bool):
            num[i], kind[i] = float(v), BOOL
        elif isinstance(v, (int, float)):
            num[i], kind[i] = float(v), NUM
        elif isinstance(v, CellError):
            num[i], kind[i], text[i] = np.nan, ERROR, v.code
            any_text = True
        else:
            num[i], kind[i], text[i] = np.nan, TEXT, str(v)
            any_text = True
    shape = objs.shape
    k: int | np.ndarray = kind.reshape(shape)
    first = kind[0] if kind.size else NUM
    if kind.size and (kind == first).all():
        k = int(first)
    return Val(torch.from_numpy(num.reshape(shape)).to(device), k,
               text.reshape(shape) if any_text else None)


def error_overlay(args: list[Val], shape: tuple[int, ...],
                  allowed: tuple[int, ...] = NUMERIC_KINDS) -> tuple[np.ndarray, np.ndarray] | None:
    """Where any of `args` holds an error value, the first in argument order (Excel's rule for
    operators and elementwise functions): a mask and the codes. None when some other entry
    is of a kind outside `allowed` (text wants coercing: that is the scalar path's work).
    This is how a column of #VALUE! flows through a checked run in bulk rather than cell by
    cell; `past_errors` gives the numbers to compute with beside it."""
    mask = np.zeros(shape, bool)
    codes = np.empty(shape, dtype=object)
    for a in args:
        k = np.broadcast_to(a.kinds(), shape)
        err = k == ERROR
        if not np.isin(k[~err], allowed).all():
            return None
        first = err & ~mask
        if first.any():
            text = np.broadcast_to(a.text, shape) if a.text is not None else np.full(shape, VALUE.code, dtype=object)
            codes[first] = text[first]
            mask |= first
    return mask, codes


def past_errors(args: list[Val], mask: np.ndarray) -> list[torch.Tensor] | None:
    """Each argument's numbers with 1 where `mask` (error_overlay's) marks an error, for the
    tensor form to compute the rest; None when any other entry is not finite (an error an
    earlier step computed, or an overflow: the scalar path decides)."""
    m = torch.from_numpy(mask).to(args[0].num.device)
    one = torch.ones((), dtype=args[0].num.dtype, device=m.device)
    nums = [torch.where(m, one, a.num) for a in args]
    return nums if all(bool(torch.isfinite(x).all()) for x in nums) else None


def overlay_errors(num: torch.Tensor, kind: int, mask: np.ndarray, codes: np.ndarray) -> Val:
    """A result of `kind` with the errors of `error_overlay` laid over it (NaN in the number)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)).to(num.device)
    num = torch.where(m, torch.full((), float("nan"), dtype=num.dtype, device=num.device), num)
    return Val(num, np.where(mask, ERROR, kind).astype(np.int8), np.where(mask, codes, None))


def to_objects(v: Val) -> np.ndarray:
    """Val -> object array of Python cell values (float, bool, str, CellError, None)."""
    num = v.num.detach().cpu().numpy()
    kinds = v.kinds()
    out = np.empty(num.shape, dtype=object)
    text = np.broadcast_to(v.text, num.shape) if v.text is not None else None
    # A non-finite number or boolean is an error an unchecked run computed: the exact paths
    # must see an error there, not a float('nan') that compares False or a bool(nan) = True.
    computed = ~np.isfinite(num) & ((kinds == NUM) | (kinds == BOOL))
    it = np.nditer(num, flags=["multi_index", "refs_ok"])
    for x in it:
        idx = it.multi_index
        k = kinds[idx]
        if computed[idx]:
            out[idx] = COMPUTED
        elif k == NUM:
            out[idx] = float(x)
        elif k == BOOL:
            out[idx] = bool(x)
        elif k == EMPTY:
            out[idx] = None
        elif k == ERROR:
            out[idx] = CellError(text[idx] if text is not None else "#VALUE!")
        else:
            out[idx] = text[idx] if text is not None else ""
    return out


# -- scalar semantics, the reference for the slow path -------------------------------

def to_number(x: Any) -> float | CellError:
    """Excel's coercion of one value for arithmetic."""
    if x is None:
        return 0.0
    if isinstance(x, bool):
        return 1.0 if x else 0.0
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, CellError):
        return x
    # Text reads as a number the way VALUE reads it ("1,000", "5%", "(3)", "1/2/2024");
    # Python's float() would also take "1_000", "inf" and "nan".
    got = parse_number(str(x))
    return VALUE if got is None else got


def to_bool(x: Any) -> bool | CellError:
    if isinstance(x, CellError):
        return x
    if x is None:
        return False
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)):
        return x != 0
    s = str(x).strip().upper()
    if s == "TRUE":
        return True
    if s == "FALSE":
        return False
    return VALUE


def to_text(x: Any) -> str | CellError:
    if isinstance(x, CellError):
        return x
    if x is None:
        return ""
    if isinstance(x, bool):
        return "TRUE" if x else "FALSE"
    if isinstance(x, (int, float)):
        return number_text(float(x))
    return str(x)


def number_text(x: float) -> str:
    """A number as Excel shows it in text: up to 15 significant digits, no trailing zeros."""
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    s = f"{x:.15g}"
    if "e" in s:
        mant, exp = s.split("e")
        e = int(exp)
        return f"{mant}E{'+' if e >= 0 else '-'}{abs(e):02d}"
    return s


_IS_SET = np.frompyfunc(lambda c: c is not None, 1, 1)     # an error code's entry holds one


def errors_where(mask: np.ndarray, code: CellError) -> np.ndarray | None:
    """Per entry, `code` where `mask` holds, else None (None when it holds nowhere)."""
    if not mask.any():
        return None
    out = np.full(mask.shape, None, dtype=object)
    out[mask] = code
    return out


def first_errors(shape: tuple[int, ...], *codes: np.ndarray | None) -> np.ndarray | None:
    """Per entry, the first error among `codes` (in argument order: Excel reports that one);
    None when none has any."""
    out = None
    for c in codes:
        if c is None:
            continue
        c = np.broadcast_to(c, shape)
        if out is None:
            out = np.array(c, dtype=object)
        else:
            take = ~_IS_SET(out).astype(bool) & _IS_SET(c).astype(bool)
            out[take] = c[take]
    return out


def fit(vals: list[Val]) -> list[Val]:
    """Excel's array broadcasting: the result is as tall and as wide as the largest
    operand; a 1-tall or 1-wide operand repeats, any other that falls short is #N/A
    where it has no entry ({1,2,3}+{10,20} is {11,22,#N/A})."""
    H = max(v.num.shape[1] for v in vals)
    W = max(v.num.shape[2] for v in vals)
    if all(v.num.shape[1] in (1, H) and v.num.shape[2] in (1, W) for v in vals):
        return vals
    out = []
    for v in vals:
        f, h, w = v.num.shape
        if h in (1, H) and w in (1, W):
            out.append(v)
            continue
        h2, w2 = (H if h != 1 else 1), (W if w != 1 else 1)
        num = torch.nn.functional.pad(v.num, (0, w2 - w, 0, h2 - h), value=float("nan"))
        kinds = np.full((f, h2, w2), ERROR, np.int8)
        kinds[:, :h, :w] = np.broadcast_to(v.kinds(), (f, h, w))
        text = np.full((f, h2, w2), "#N/A", dtype=object)
        text[:, :h, :w] = np.broadcast_to(v.text, (f, h, w)) if v.text is not None else None
        out.append(Val(num, kinds, text, v.is_ref))
    return out


def broadcast(*vals: Val) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(v.num.shape for v in vals)))
