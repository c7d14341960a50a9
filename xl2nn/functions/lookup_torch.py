"""Lookup positions as torch ops, for a trace in which the lookup value, the searched range or
an index depends on the parameters.

lookup.py works positions out with NumPy, which a trace may not do with parameter-dependent
numbers (HostReadGuard). These are the same searches as aten ops, over every query at once and
with no data-dependent Python control flow, so the traced program recomputes them for any
weights. What steers a search (match types, which entries are of the query's kind, family
rows) is host metadata and stays NumPy. Positions are integers: no gradient flows through
them, only through the entries they pick. No errors here: where lookup.py gives one (#N/A,
#REF!), these give position -1 and the caller NaN, as training does with every error.
"""
from __future__ import annotations

import numpy as np
import torch

from .tracing import HostRead
from .values import BOOL, EMPTY, NUM, Val

EXACT = 0


def locate_val(x: Val, mode: np.ndarray, vals: torch.Tensor, kinds: np.ndarray) -> torch.Tensor:
    """lookup._locate for numeric or boolean lookup values (x.uniform() NUM or BOOL): each
    entry's (mode.shape) 0-based position among vals (Fa, n) of its kind, -1 where none."""
    shape = mode.shape
    f = np.repeat(np.arange(shape[0]), shape[1] * shape[2])     # each entry's family cell
    xs = x.num.expand(shape).reshape(-1)
    return locate(xs, np.array(mode).reshape(-1), f, vals, kinds == x.uniform()).reshape(shape)


def picked_kind(kinds: np.ndarray, exc: HostRead) -> int:
    """The one kind of the entries a lookup may pick: with the position unknown on the host,
    only a single (numeric) kind is known to be the result's. Else the exact path's HostRead."""
    flat = kinds.reshape(-1)
    if not flat.size:
        return NUM
    if flat[0] in (NUM, BOOL, EMPTY) and (flat == flat[0]).all():
        return int(flat[0])
    raise exc


def locate(x: torch.Tensor, mode: np.ndarray, row: np.ndarray, vals: torch.Tensor,
           valid: np.ndarray) -> torch.Tensor:
    """0-based position of each query x (Q,) among vals (Fa, n) where `valid` (Fa, n), -1 where
    none: lookup._search_numbers as ops. mode: each query's match type; row: its row of vals."""
    x, vals = x.detach(), vals.detach()
    dev = x.device
    row = row if vals.shape[0] > 1 else np.zeros_like(row)
    exact = mode == EXACT
    pos = None
    if exact.any():
        pos = _exact(x, row, vals, valid)
    if (~exact).any():
        approx = _binary_search(x, mode > 0, row, vals, valid)
        pos = approx if pos is None else torch.where(torch.as_tensor(exact, device=dev), pos, approx)
    if pos is None:
        return torch.full(x.shape, -1, dtype=torch.int64, device=dev)
    # A query that is an error (a non-finite number in training) finds nothing: an error, as in
    # Excel. So does an approximate search through a range holding one: its steps would compare
    # against a NaN, and no sound position is known (an exact search just never matches it).
    unsound = (~torch.isfinite(vals) & torch.as_tensor(valid, device=dev)).any(dim=1)
    bad = ~torch.isfinite(x) | (torch.as_tensor(~exact, device=dev) & unsound[torch.as_tensor(row, device=dev)])
    return torch.where(bad, -1, pos)


def _exact(x: torch.Tensor, row: np.ndarray, vals: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    """The first entry equal to each query (numbers compare exactly, as lookup's NumPy does)."""
    dev = x.device
    if vals.shape[0] == 1:
        # One range shared by all: a stable sort and a binary search, n log n (a query per row
        # into an n-row table would be an n x n comparison). Leftmost equal = first match.
        at = torch.as_tensor(np.flatnonzero(valid[0]), device=dev)
        if not len(at):
            return torch.full(x.shape, -1, dtype=torch.int64, device=dev)
        v = vals[0, at]
        # searchsorted wants a monotone sequence: NaN (an error in training) sorts as +inf.
        key = torch.where(torch.isnan(v), float("inf"), v)
        sv, order = torch.sort(key, stable=True)
        i = torch.searchsorted(sv, x.contiguous(), side="left").clamp(max=len(at) - 1)
        hit = v[order[i]] == x
        return torch.where(hit, at[order[i]], -1)
    r = torch.as_tensor(row, device=dev)
    eq = (vals[r] == x[:, None]) & torch.as_tensor(valid, device=dev)[r]
    return torch.where(eq.any(dim=1), eq.to(torch.uint8).argmax(dim=1), -1)   # argmax: the first


def run_ends(packed: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """lookup.run_ends as ops: the last position of the run of equal entries starting at each
    packed entry (a reversed running minimum over the positions where a run breaks)."""
    n = packed.shape[1]
    at = torch.arange(n, device=packed.device)
    brk = torch.ones(packed.shape, dtype=torch.bool, device=packed.device)
    if n > 1:
        brk[:, :-1] = packed[:, 1:] != packed[:, :-1]
    brk = brk | (at[None, :] >= count[:, None] - 1)
    idx = torch.where(brk, at, n - 1)
    return torch.flip(torch.cummin(torch.flip(idx, [1]), dim=1).values, [1])


def _binary_search(x: torch.Tensor, up: np.ndarray, row: np.ndarray, vals: torch.Tensor,
                   valid: np.ndarray) -> torch.Tensor:
    """Excel's approximate match (lookup._binary_search, lookup.bisect): the same first/last/mid
    steps among the valid entries, for every query at once, n.bit_length() + 1 of them (each
    step at least halves last - first), the queries already done unchanged."""
    dev = x.device
    n = vals.shape[1]
    if n == 0:
        return torch.full(x.shape, -1, dtype=torch.int64, device=dev)
    order = torch.as_tensor(np.argsort(~valid, axis=1, kind="stable"), device=dev)  # valid first
    packed = vals.gather(1, order)
    ends = run_ends(packed, torch.as_tensor(valid.sum(axis=1), device=dev))
    r = torch.as_tensor(row, device=dev)
    up_t = torch.as_tensor(up, device=dev)
    m = torch.as_tensor(valid.sum(axis=1)[row], dtype=torch.int64, device=dev)
    first = torch.zeros(x.shape, dtype=torch.int64, device=dev)
    last = m - 1
    hit = torch.zeros_like(first)
    found = torch.full_like(first, -1)
    done = m <= 0
    for _ in range(n.bit_length() + 1):
        span = last - first
        active = ~done & (span > 0)
        mid = (first + torch.div(span, 2, rounding_mode="floor")).clamp(0, n - 1)
        v = packed[r, mid]
        eq = active & (v == x)
        lt = v < x
        found = torch.where(eq, ends[r, mid], found)
        one = active & ~eq & (span == 1)
        hit = torch.where(one, torch.where(lt == up_t, last, first), hit)
        more = active & ~eq & (span > 1)
        first = torch.where(more & (lt == up_t), mid, first)
        last = torch.where(more & (lt != up_t), mid, last)
        done = done | eq | one
    vh = packed[r, hit.clamp(0, n - 1)]
    tail = (hit == m - 1) & torch.where(up_t, vh <= x, vh >= x)
    res = torch.where(found >= 0, found, torch.where(tail, hit, hit - 1))
    res = torch.where(m <= 0, -1, res)
    return torch.where(res >= 0, order[r, res.clamp(0, n - 1)], -1)


def xmatch(x: torch.Tensor, mm: np.ndarray, sm: np.ndarray, row: np.ndarray, vals: torch.Tensor,
           valid: np.ndarray) -> torch.Tensor:
    """xlookup.locate for numeric queries x (Q,) as ops: each query's 0-based position among
    vals (Fa, n) where `valid`, -1 where none; mm/sm each query's match and search mode
    (host metadata), row its row of vals."""
    x, vals = x.detach(), vals.detach()
    dev = x.device
    n = vals.shape[1]
    if n == 0:
        return torch.full(x.shape, -1, dtype=torch.int64, device=dev)
    row = row if vals.shape[0] > 1 else np.zeros_like(row)
    r = torch.as_tensor(row, device=dev)
    valid_t = torch.as_tensor(valid, device=dev)
    mm_t = torch.as_tensor(mm, device=dev)
    desc = torch.as_tensor(sm < 0, device=dev)
    # Linear: the target value (x, or the nearest below / above it among the valid entries),
    # then its first (last, searching backward) occurrence. A NaN entry (an error while
    # training) is never equal, below or above: skipped, as an error cell is.
    v, ok = vals[r], valid_t[r]
    xs = x[:, None]
    inf = torch.full((), float("inf"), dtype=vals.dtype, device=dev)
    lo = torch.where(ok & (v <= xs), v, -inf).amax(dim=1)
    hi = torch.where(ok & (v >= xs), v, inf).amin(dim=1)
    target = torch.where(mm_t == -1, lo, torch.where(mm_t == 1, hi, x))
    hit = ok & (v == target[:, None])
    first = hit.to(torch.uint8).argmax(dim=1)
    last = n - 1 - hit.flip(1).to(torch.uint8).argmax(dim=1)
    linear = torch.where(hit.any(dim=1), torch.where(desc, last, first), -1)
    # Binary: a lower bound among the valid entries (packed first, in order).
    order = torch.as_tensor(np.argsort(~valid, axis=1, kind="stable"), device=dev)
    packed = vals.gather(1, order)
    m = torch.as_tensor(valid.sum(axis=1)[row], dtype=torch.int64, device=dev)
    p = torch.zeros(x.shape, dtype=torch.int64, device=dev)
    top = m.clone()
    for _ in range(n.bit_length() + 1):
        active = p < top
        mid = torch.div(p + top, 2, rounding_mode="floor").clamp(0, n - 1)
        w = packed[r, mid]
        go = torch.where(desc, w > x, w < x)
        p = torch.where(active & go, mid + 1, p)
        top = torch.where(active & ~go, mid, top)
    exact = (p < m) & (packed[r, p.clamp(0, n - 1)] == x)
    before = torch.where(desc, mm_t == 1, mm_t == -1)
    after = torch.where(desc, mm_t == -1, mm_t == 1)
    res = torch.where(exact, p, torch.where(before, p - 1, torch.where(after & (p < m), p, -1)))
    res = torch.where((res >= 0) & (res < m), res, -1)
    binary = torch.where(res >= 0, order[r, res.clamp(0, n - 1)], -1)
    is_binary = torch.as_tensor(np.abs(sm) == 2, device=dev)
    pos = torch.where(is_binary, binary, linear)
    # An error as the query finds nothing; a bisection through an error entry has no sound
    # answer (the sheet skips the entry, the NaN comparisons would not): an error too.
    unsound = (~torch.isfinite(vals) & valid_t).any(dim=1)[r]
    return torch.where(~torch.isfinite(x) | (is_binary & unsound), -1, pos)


def whole(t: torch.Tensor) -> torch.Tensor:
    """An index number truncated toward zero (lookup._whole); NaN stays NaN (out of range)."""
    return torch.trunc(t.detach().clamp(-2.0 ** 40, 2.0 ** 40))


def index_of(t: torch.Tensor, extent: int, zero_ok: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A truncated 1-based index number -> (0-based position, whether in range); a 0 reads as
    position 0 where zero_ok (the caller knows when Excel reads it so)."""
    ok = (t >= 1) & (t <= extent)
    if zero_ok:
        ok = ok | (t == 0)
    return torch.where(ok, (t - 1).clamp(min=0), 0).to(torch.int64), ok


def take(src: torch.Tensor, flat: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """src's (fs, h, w) entries at `flat` (row-major positions in each family cell's block), NaN
    where not `ok`. Indexing: the gradient reaches exactly the entries taken."""
    fs = src.shape[0]
    block = src.reshape(fs, -1)
    idx = torch.where(ok, flat, 0)
    if fs == 1:
        num = block[0][idx]
    else:
        rows = torch.arange(idx.shape[0], device=src.device).reshape(-1, *([1] * (idx.dim() - 1)))
        num = block[rows, idx]
    return torch.where(ok, num, float("nan"))


__all__ = ["index_of", "locate", "locate_val", "picked_kind", "run_ends", "take", "whole", "xmatch"]
