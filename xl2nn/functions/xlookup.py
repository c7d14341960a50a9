"""XLOOKUP and XMATCH (Lookup & Reference, Excel 365): lookup.py's kinds, positions and
gathers, with Excel's match modes and search modes.

match_mode 0 exact (wildcards only with 2), -1 exact or the next smaller entry, 1 exact or
the next larger, 2 a wildcard match; search_mode 1 first to last, -1 last to first, 2 a
binary search of data sorted ascending, -2 of data sorted descending. As in MATCH, a lookup
value only meets entries of its own kind (numbers, text without case, booleans); blanks and
errors in the searched array are never found. In a linear search "the next smaller" is the
largest entry below the value, the first of its equals in the search's direction. A binary
search is a lower bound over the entries of the value's kind: on sorted data it finds what
the linear first-to-last search finds (the first of equal entries); on unsorted data its
answer is the bisection's, as Excel's own is.

XLOOKUP returns the return_array's row (a column lookup) or column (a row lookup) at the
position found, so a 2-D return_array spills a whole row; picked by torch indexing, the
gradient reaches exactly the entries returned (a lookup into a weight table). A lookup value
or searched array that moves with the parameters searches as torch ops (lookup_torch.xmatch).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UnsupportedFormula
from . import lookup_torch
from .lookup import _codes, _direct_error, _finish, _Keys, _numbers, _shape, _take, _TextIndex, _whole
from .values import errors_where as _where, first_errors as _merge
from .registry import Context, argument, excel
from .tracing import HostRead
from .values import BOOL, EMPTY, ERROR, NA, NUM, TEXT, VALUE, Val
from .wildcard import wildcard

MATCH_MODES = (-1, 0, 1, 2)
SEARCH_MODES = (1, -1, 2, -2)


# -- positions on the host -------------------------------------------------------------

def _linear_numbers(x: np.ndarray, mm: np.ndarray, backward: np.ndarray, row: np.ndarray,
                    vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """First (last, backward) entry equal to x, or holding the largest value below it (mm -1)
    or the smallest above it (mm 1); -1 where there is none."""
    out = np.full(x.shape, -1, dtype=np.int64)
    if vals.shape[0] == 1:
        # One array shared by every cell: sorted once, each query searched (n log n).
        at = np.flatnonzero(valid[0])
        if not len(at):
            return out
        v = vals[0, at]
        order = np.argsort(v, kind="stable")        # equal values stay in sheet order
        sv = v[order]
        below = np.searchsorted(sv, x, side="right") - 1
        above = np.searchsorted(sv, x, side="left")
        i = np.where(mm == -1, below, above)
        ok = (i >= 0) & (i < len(sv))
        u = sv[np.clip(i, 0, len(sv) - 1)]
        ok &= (mm != 0) & (mm != 2) | (u == x)
        j = np.where(backward, np.searchsorted(sv, u, side="right") - 1, np.searchsorted(sv, u, side="left"))
        return np.where(ok, at[order[np.clip(j, 0, len(sv) - 1)]], -1)
    v, ok = vals[row], valid[row]
    xs = x[:, None]
    lo = np.where(ok & (v <= xs), v, -np.inf).max(axis=1, initial=-np.inf)
    hi = np.where(ok & (v >= xs), v, np.inf).min(axis=1, initial=np.inf)
    target = np.where(mm == -1, lo, np.where(mm == 1, hi, x))
    hit = ok & (v == target[:, None])
    n = v.shape[1]
    first = hit.argmax(axis=1)
    last = n - 1 - hit[:, ::-1].argmax(axis=1)
    return np.where(hit.any(axis=1), np.where(backward, last, first), out)


def _partition(x: np.ndarray, desc: np.ndarray, row: np.ndarray, packed: np.ndarray,
               count: np.ndarray) -> np.ndarray:
    """The number of leading packed entries below x (above it, desc): a lower bound by
    bisection, n.bit_length() + 1 steps for every query."""
    n = packed.shape[1]
    lo = np.zeros(x.shape, np.int64)
    hi = count[row].astype(np.int64)
    for _ in range(n.bit_length() + 1):
        active = lo < hi
        if not active.any():
            break
        mid = np.clip((lo + hi) // 2, 0, n - 1)
        v = packed[row, mid]
        go = np.where(desc, v > x, v < x)
        lo = np.where(active & go, mid + 1, lo)
        hi = np.where(active & ~go, mid, hi)
    return lo


def _binary_numbers(x: np.ndarray, mm: np.ndarray, desc: np.ndarray, row: np.ndarray,
                    vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = vals.shape[1]
    if n == 0:
        return np.full(x.shape, -1, dtype=np.int64)
    order = np.argsort(~valid, axis=1, kind="stable")
    packed = np.take_along_axis(vals, order, axis=1)
    count = valid.sum(axis=1)
    p = _partition(x, desc, row, packed, count)
    return _settle(p, mm, desc, count[row], packed[row, np.clip(p, 0, n - 1)] == x, order, row)


def _settle(p, mm, desc, m, equal, order, row):
    """The lower bound p (with whether entry p equals x) -> the position for each match mode:
    an equal entry, else the one before p (next smaller ascending, next larger descending) or
    p itself."""
    exact = (p < m) & equal
    before = np.where(desc, mm == 1, mm == -1)       # the answer sits before the bound
    after = np.where(desc, mm == -1, mm == 1)
    res = np.where(exact, p, np.where(before, p - 1, np.where(after & (p < m), p, -1)))
    res = np.where((res >= 0) & (res < m), res, -1)
    return np.where(res >= 0, order[row, np.clip(res, 0, order.shape[1] - 1)], -1)


def _search_text(s: str, mm: int, sm: int, ix: _TextIndex) -> int:
    keys, pos = ix.keys, ix.pos
    s = s.lower()
    if abs(sm) == 2:
        desc = sm < 0
        lo, hi = 0, len(keys)
        while lo < hi:
            mid = (lo + hi) // 2
            if (keys[mid] > s) if desc else (keys[mid] < s):
                lo = mid + 1
            else:
                hi = mid
        m = len(keys)
        if lo < m and keys[lo] == s:
            return int(pos[lo])
        at = lo - 1 if (mm == 1 if desc else mm == -1) else lo if mm != 0 else -1
        return int(pos[at]) if 0 <= at < m else -1
    seq = range(len(keys) - 1, -1, -1) if sm < 0 else range(len(keys))
    if mm == 2:
        rx = wildcard(s)
        return next((int(pos[i]) for i in seq if rx.fullmatch(keys[i])), -1)
    if mm == 0:
        return next((int(pos[i]) for i in seq if keys[i] == s), -1)
    near = [k for k in keys if (k <= s if mm == -1 else k >= s)]
    if not near:
        return -1
    best = max(near) if mm == -1 else min(near)
    return next(int(pos[i]) for i in seq if keys[i] == best)


def _no_empty(x: Val, shape: tuple[int, ...], err: np.ndarray | None) -> None:
    """Excel does not document XLOOKUP/XMATCH of an empty lookup value: where the answer
    would depend on it (no other error decides the entry), no guess."""
    empty = np.broadcast_to(x.kinds(), shape) == EMPTY
    if err is not None:
        empty = empty & (np.broadcast_to(err, shape) == None)  # noqa: E711  (object array)
    if empty.any():
        raise UnsupportedFormula("XLOOKUP/XMATCH of an empty lookup value")


def locate(x: Val, mm: np.ndarray, sm: np.ndarray, keys: _Keys) -> np.ndarray:
    """0-based position in `keys` of each entry of the lookup value x (mm.shape), -1 where
    none; mm and sm valid modes."""
    shape = tuple(mm.shape)
    kinds = np.broadcast_to(x.kinds(), shape)
    num = np.broadcast_to(x.num.detach().cpu().numpy(), shape)
    fa = keys.num.shape[0]
    pos = np.full(shape, -1, dtype=np.int64)
    for kind in (NUM, BOOL):
        sel = kinds == kind
        if not sel.any():
            continue
        f = np.nonzero(sel)[0]
        row = f if fa > 1 else np.zeros_like(f)
        valid = keys.kind == kind
        xs, m, s = num[sel], mm[sel], sm[sel]
        binary = np.abs(s) == 2
        got = np.full(xs.shape, -1, dtype=np.int64)
        if (~binary).any():
            b = ~binary
            got[b] = _linear_numbers(xs[b], m[b], s[b] < 0, row[b], keys.num, valid)
        if binary.any():
            got[binary] = _binary_numbers(xs[binary], m[binary], s[binary] < 0, row[binary], keys.num, valid)
        pos[sel] = got
    sel = kinds == TEXT
    if sel.any():
        text = np.broadcast_to(x.text, shape)
        indexes: dict[int, _TextIndex] = {}
        for idx in zip(*np.nonzero(sel)):
            r = 0 if fa == 1 else int(idx[0])
            ix = indexes.get(r)
            if ix is None:
                ix = indexes[r] = _TextIndex(keys.kind[r], keys.text[r] if keys.text is not None else None)
            pos[idx] = _search_text(str(text[idx]), int(mm[idx]), int(sm[idx]), ix)
    return pos


# -- arguments -------------------------------------------------------------------------

def _modes(args: list[Val | None], i: int, ctx: Context, default: int, allowed: tuple[int, ...],
           shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """A mode argument, truncated, per entry; with the entries where it is an error or not
    one of `allowed` (#VALUE!)."""
    v = argument(args, i, ctx, float(default), omitted=float(default))
    n = _numbers(v)
    mode = np.broadcast_to(_whole(n.num), shape).copy()
    bad = ~np.isin(mode, allowed)
    mode[bad] = default
    err = _merge(shape, None if n.err is None else np.broadcast_to(n.err, shape), _where(bad, VALUE))
    return mode, err


def _prepare(args: list[Val | None], ctx: Context, base: int, *more: Val | None) -> tuple:
    """The lookup value, the searched array and both modes (arguments base, base + 1) with
    their errors, fitted to one shape (that of `more` family cells too)."""
    x, arr = argument(args, 0, ctx), argument(args, 1, ctx)
    shape = _shape(x, Val(arr.num[:, :1, :1], NUM), *(Val(v.num[:, :1, :1], NUM) for v in more if v is not None))
    for i in (base, base + 1):
        if i < len(args) and args[i] is not None:
            shape = tuple(np.broadcast_shapes(shape, args[i].num.shape))
    mm, mm_err = _modes(args, base, ctx, 0, MATCH_MODES, shape)
    sm, sm_err = _modes(args, base + 1, ctx, 1, SEARCH_MODES, shape)
    # A wildcard match has no binary search.
    clash = _where((mm == 2) & (np.abs(sm) == 2), VALUE)
    return x, arr, shape, mm, sm, _merge(shape, mm_err, sm_err, clash)


def _traced_positions(x: Val, arr: Val, mm: np.ndarray, sm: np.ndarray, exc: HostRead) -> torch.Tensor:
    """locate() as torch ops, for numeric lookup values (else the HostRead stands)."""
    if x.uniform() not in (NUM, BOOL):
        raise exc
    fa = arr.num.shape[0]
    vals = arr.num.reshape(fa, -1)
    valid = arr.kinds().reshape(fa, -1) == x.uniform()
    shape = mm.shape
    f = np.repeat(np.arange(shape[0]), shape[1] * shape[2])
    xs = x.num.expand(shape).reshape(-1)
    at = lookup_torch.xmatch(xs, mm.reshape(-1), sm.reshape(-1), f, vals, valid)
    return at.reshape(shape)


# -- the functions ---------------------------------------------------------------------

@excel("XMATCH", "Lookup & Reference", min_args=2, max_args=4, differentiable=False, args="VRVV")
def xmatch(args: list[Val | None], ctx: Context) -> Val:
    x, arr, shape, mm, sm, mode_err = _prepare(args, ctx, 2)
    if arr.num.shape[1] != 1 and arr.num.shape[2] != 1:
        # A 2-D lookup_array: #VALUE!, as XLOOKUP's (MATCH's is #N/A).
        return _finish(Val(torch.zeros(shape, dtype=torch.float64, device=ctx.device), NUM),
                       _merge(shape, _codes(x), np.full(shape, VALUE, dtype=object)))
    err = _merge(shape, _codes(x), _direct_error(arr), mode_err)
    _no_empty(x, shape, err)
    try:
        pos = locate(x, mm, sm, _Keys.of(arr))
    except HostRead as exc:
        if ctx.checked:
            raise
        at = _traced_positions(x, arr, mm, sm, exc)
        num = torch.where(at >= 0, (at + 1).to(torch.float64), float("nan"))
        return _finish(Val(num, NUM), err)
    err = _merge(shape, err, _where(pos < 0, NA))
    return _finish(Val(torch.as_tensor((pos + 1).astype(np.float64), device=ctx.device), NUM), err)


def _fill(found: Val, missing: np.ndarray, other: Val) -> Val:
    """found, with `other` (one value per family cell) where `missing`."""
    if not missing.any():
        return found
    shape = np.broadcast_shapes(found.num.shape, other.num.shape)
    m = torch.as_tensor(np.array(np.broadcast_to(missing, shape)), device=found.num.device)
    num = torch.where(m, other.num.expand(shape), found.num.expand(shape))
    kinds = np.array(np.broadcast_to(found.kinds(), shape))
    okinds = np.broadcast_to(other.kinds(), shape)
    mm = np.broadcast_to(missing, shape)
    kinds[mm] = okinds[mm]
    text = np.full(shape, None, dtype=object)
    if found.text is not None:
        text[...] = np.broadcast_to(found.text, shape)
    if other.text is not None:
        text[mm] = np.broadcast_to(other.text, shape)[mm]
    flat = kinds.reshape(-1)
    kind: int | np.ndarray = int(flat[0]) if flat.size and (flat == flat[0]).all() else kinds
    has_text = bool(((kinds == TEXT) | (kinds == ERROR)).any())
    return Val(num, kind, text if has_text else None)


@excel("XLOOKUP", "Lookup & Reference", min_args=3, max_args=6, args="VRRVVV")
def xlookup(args: list[Val | None], ctx: Context) -> Val:
    ret = argument(args, 2, ctx)
    nf = args[3] if len(args) > 3 and args[3] is not None else None
    x, arr, shape, mm, sm, mode_err = _prepare(args, ctx, 4, ret, nf)
    if nf is not None and nf.num.shape[1:] != (1, 1):
        raise UnsupportedFormula("XLOOKUP with an array as if_not_found")
    h, w = arr.num.shape[1:]
    rh, rw = ret.num.shape[1:]
    if w == 1 and rh == h:          # a column searched: the return array's row
        vertical = True
    elif h == 1 and rw == w:        # a row searched: its column
        vertical = False
    else:                           # a 2-D searched array, or sizes that differ
        return _finish(Val(torch.zeros(shape, dtype=torch.float64, device=ctx.device), NUM),
                       _merge(shape, _codes(x), np.full(shape, VALUE, dtype=object)))
    width = rw if vertical else rh      # entries returned per lookup
    if width > 1 and shape[1:] != (1, 1):
        raise UnsupportedFormula("XLOOKUP of an array of lookup values into a 2-D return_array")
    out = (shape[0], 1, rw) if vertical else (shape[0], rh, 1)
    if width == 1:
        out = shape
    err = _merge(shape, _codes(x), _direct_error(arr), mode_err)
    _no_empty(x, shape, err)
    try:
        pos = locate(x, mm, sm, _Keys.of(arr))
    except HostRead as exc:
        if ctx.checked:
            raise
        at = _traced_positions(x, arr, mm, sm, exc).reshape(shape)
        kind = lookup_torch.picked_kind(ret.kinds(), exc)
        if nf is not None and nf.uniform() != kind:     # the result's kind would depend on the position
            raise exc
        at = at.expand(out) if width > 1 else at
        flat = _flat_positions(at, vertical, rw, rh, torch)
        num = lookup_torch.take(ret.num, flat, at >= 0)
        if nf is not None:      # in the first returned entry only, as on the exact path
            first = torch.ones((), dtype=torch.bool, device=num.device)
            if width > 1:
                first = (torch.arange(width, device=num.device) == 0).reshape((1, 1, -1) if vertical else (1, -1, 1))
            num = torch.where((at < 0) & first, nf.num.expand(num.shape), num)
        return _finish(Val(num, kind, blank_is_value=True), None if err is None else np.broadcast_to(err, shape))
    missing = pos < 0
    rest = None         # not found, a 2-D return array: one value, the rest of the row #N/A
    if width > 1:
        pos = np.broadcast_to(pos, out)
        missing = np.broadcast_to(missing, out)
        err = None if err is None else np.broadcast_to(err, out)
        rest = missing & (np.arange(width).reshape((1, 1, -1) if vertical else (1, -1, 1)) > 0)
    flat = _flat_positions(np.where(missing, 0, pos), vertical, rw, rh, np)
    found = _take(ret, flat, ~missing)
    found.is_ref = False
    if nf is None:
        err = _merge(missing.shape, err, _where(missing, NA))
    else:
        found = _fill(found, missing, nf)
        if rest is not None:
            err = _merge(missing.shape, err, _where(rest, NA))
    out_val = _finish(found, err)
    out_val.blank_is_value = True
    return out_val


def _flat_positions(pos, vertical: bool, rw: int, rh: int, lib):
    """Row-major positions in the return array: row `pos` (vertical) or column `pos`, one
    entry per returned cell (pos already shaped like the result)."""
    if vertical:
        j = lib.arange(rw).reshape(1, 1, -1) if lib is np else torch.arange(rw, device=pos.device).reshape(1, 1, -1)
        return pos * rw + (j if rw > 1 else 0)
    i = lib.arange(rh).reshape(1, -1, 1) if lib is np else torch.arange(rh, device=pos.device).reshape(1, -1, 1)
    return (i if rh > 1 else 0) * rw + pos


__all__ = ["locate", "xlookup", "xmatch"]
