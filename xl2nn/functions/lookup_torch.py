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


def _binary_search(x: torch.Tensor, up: np.ndarray, row: np.ndarray, vals: torch.Tensor,
                   valid: np.ndarray) -> torch.Tensor:
    """Excel's approximate match (lookup._binary_search): the same lo/hi/mid steps among the
    valid entries, for every query at once. A search over m entries ends after m.bit_length()
    steps; every query runs n.bit_length() of them, the ones already done unchanged."""
    dev = x.device
    n = vals.shape[1]
    if n == 0:
        return torch.full(x.shape, -1, dtype=torch.int64, device=dev)
    order = torch.as_tensor(np.argsort(~valid, axis=1, kind="stable"), device=dev)  # valid first
    packed = vals.gather(1, order)
    r = torch.as_tensor(row, device=dev)
    up_t = torch.as_tensor(up, device=dev)
    lo = torch.zeros(x.shape, dtype=torch.int64, device=dev)
    hi = torch.as_tensor(valid.sum(axis=1)[row] - 1, dtype=torch.int64, device=dev)
    for _ in range(n.bit_length()):
        active = lo <= hi
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        v = packed[r, mid.clamp(0, n - 1)]
        right = torch.where(up_t, v <= x, v >= x)
        lo = torch.where(active & right, mid + 1, lo)
        hi = torch.where(active & ~right, mid - 1, hi)
    return torch.where(hi >= 0, order[r, hi.clamp(min=0)], -1)


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


__all__ = ["index_of", "locate", "locate_val", "picked_kind", "take", "whole"]
