"""Lookup & Reference functions: INDEX, MATCH, VLOOKUP, HLOOKUP, LOOKUP, CHOOSE, ROWS, COLUMNS
(XLOOKUP and XMATCH in xlookup.py).

Where to look is worked out with NumPy on detached values: positions are integers, constants
as far as gradients go. What is found is then taken from the looked-up range's tensor by
torch indexing, so a gradient flows into exactly the cells that were picked (INDEX or VLOOKUP
into a weight table: an embedding lookup) and nowhere else.

Matching follows Excel: numbers, text and booleans only ever match their own kind, empty
cells and errors in the searched range match nothing, text compares without case, and an
exact match (MATCH type 0, VLOOKUP FALSE) reads * ? and ~ in text as wildcards. An
approximate match (MATCH 1 and -1, VLOOKUP/HLOOKUP TRUE, LOOKUP) is Excel's binary search
(bisect() below) over the entries of the lookup value's kind, the others skipped as Excel's
idioms need (LOOKUP(2,1/(r=x),v) finds the last match, LOOKUP(9.99E+307,r) the last number).
On sorted data it finds the last entry <= the value (type 1) or, in descending data, the
last entry >= it (type -1); on unsorted data it finds what the bisection finds, which is
Excel's answer too (MATCH(1,{1,0}) is 1), never a scan's.

Every argument read as a value may be an array (an array formula, or SUMPRODUCT around the
call): the function is then applied entry by entry, as Excel does.

In a trace (training), a lookup value, searched range or index number that depends on the
parameters may not be read on the host: the NumPy step raises HostRead, and the numeric cases
then take the same search as torch ops (lookup_torch), errors there coming out as NaN.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..cells import CellError
from ..errors import UnsupportedFormula
from .tracing import HostRead
from . import lookup_torch
from .registry import Context, argument, excel
from .values import (BOOL, EMPTY, ERROR, NA, NUM, REF, TEXT, VALUE, Val, fit, to_bool,
                     to_number, to_objects)
from .values import errors_where as _where, first_errors as _merge   # (names used throughout)
from .wildcard import wildcard

EXACT, ASCENDING, DESCENDING = 0, 1, -1
_WILDCARD = re.compile(r"[*?~]")
_SET = np.frompyfunc(lambda c: c is not None, 1, 1)


# -- arguments -------------------------------------------------------------------------

@dataclass
class _Numbers:
    """An argument read entry by entry as a number (an index, a match type)."""

    num: np.ndarray             # float64, NaN where err is set
    err: np.ndarray | None      # object: each entry's CellError, or None


def _numbers(v: Val, coerce: Callable[[object], object] = to_number) -> _Numbers:
    if v.numeric:   # numbers, booleans (1/0) and empty cells (0) read as they are stored
        return _Numbers(v.num.detach().cpu().numpy().astype(np.float64), None)
    objs = to_objects(v).reshape(-1)
    conv = [coerce(x) for x in objs]
    err = np.empty(len(conv), dtype=object)
    num = np.empty(len(conv), dtype=np.float64)
    for i, c in enumerate(conv):
        bad = isinstance(c, CellError)
        err[i] = c if bad else None
        num[i] = np.nan if bad else float(c)  # type: ignore[arg-type]
    shape = tuple(v.num.shape)
    return _Numbers(num.reshape(shape), err.reshape(shape) if _SET(err).any() else None)


def _whole(x: np.ndarray) -> np.ndarray:
    """Excel's truncation of an index toward zero, as int64 (huge values stay out of range)."""
    return np.trunc(np.nan_to_num(np.clip(x, -2.0 ** 40, 2.0 ** 40))).astype(np.int64)


def _shape(*vals: Val) -> tuple[int, int, int]:
    return tuple(torch.broadcast_shapes(*(v.num.shape for v in vals)))  # type: ignore[return-value]


# -- errors ----------------------------------------------------------------------------

def _codes(v: Val) -> np.ndarray | None:
    """Each entry's error (the CellError of an error entry, else None)."""
    if not v.has(ERROR):
        return None
    kinds = v.kinds()
    text = np.broadcast_to(v.text, kinds.shape)
    out = np.full(kinds.shape, None, dtype=object)
    for idx in zip(*np.nonzero(kinds == ERROR)):
        out[idx] = CellError(text[idx])
    return out


def _finish(v: Val, err: np.ndarray | None, pad: np.ndarray | None = None) -> Val:
    """v with its error entries (err: a CellError) and padding entries (pad: empty) set.
    torch.where keeps the gradient of every other entry."""
    has_err = err is not None and bool(_SET(err).any())
    has_pad = pad is not None and bool(pad.any())
    if not (has_err or has_pad):
        return v
    shape = np.broadcast_shapes(v.num.shape, *(a.shape for a in (err, pad) if a is not None))
    num = v.num.expand(shape)
    kinds = np.array(np.broadcast_to(v.kinds(), shape), dtype=np.int8) if isinstance(v.kind, np.ndarray) \
        else np.full(shape, v.kind, dtype=np.int8)
    text = np.array(np.broadcast_to(v.text, shape), dtype=object) if v.text is not None \
        else np.full(shape, None, dtype=object)
    if has_pad:
        p = np.broadcast_to(pad, shape)
        kinds[p], text[p] = EMPTY, None
        num = torch.where(torch.as_tensor(p, device=num.device), 0.0, num)
    if has_err:
        e = np.broadcast_to(err, shape)
        hit = _SET(e).astype(bool)
        kinds[hit] = ERROR
        text[hit] = np.array([c.code for c in e[hit]], dtype=object)
        num = torch.where(torch.as_tensor(hit, device=num.device), float("nan"), num)
    flat = kinds.reshape(-1)
    kind: int | np.ndarray = int(flat[0]) if flat.size and (flat == flat[0]).all() else kinds
    has_text = bool(((kinds == TEXT) | (kinds == ERROR)).any())
    return Val(num, kind, text if has_text else None, v.is_ref)


# -- taking entries --------------------------------------------------------------------

def _take(src: Val, flat: np.ndarray, ok: np.ndarray) -> Val:
    """src's entries at `flat` (row-major positions inside each family cell's block), shaped
    like `flat` (F, h, w). Where `ok` is False position 0 is read: the caller overwrites it.
    Torch indexing, so the gradient reaches exactly the entries taken."""
    fs = src.num.shape[0]
    idx = np.where(ok, flat, 0)
    dev = src.num.device
    block = src.num.reshape(fs, -1)
    if fs == 1:
        rows = np.zeros((1, 1, 1), np.int64)
        num = block[0][torch.as_tensor(idx, device=dev)]
    else:
        rows = np.arange(idx.shape[0]).reshape(-1, 1, 1)
        num = block[torch.as_tensor(rows, device=dev), torch.as_tensor(idx, device=dev)]
    rows = np.broadcast_to(rows, idx.shape)
    uniform = src.uniform()
    kind = uniform if uniform is not None else src.kinds().reshape(fs, -1)[rows, idx]
    text = None
    if src.text is not None:
        text = np.broadcast_to(src.text, src.num.shape).reshape(fs, -1)[rows, idx]
    return Val(num, kind, text, is_ref=src.is_ref)


def _transposed(v: Val) -> Val:
    kind = v.kind.transpose(0, 2, 1) if isinstance(v.kind, np.ndarray) else v.kind
    text = v.text.transpose(0, 2, 1) if v.text is not None else None
    return Val(v.num.transpose(1, 2), kind, text, is_ref=v.is_ref)


# -- searching -------------------------------------------------------------------------

@dataclass
class _Keys:
    """The entries a lookup searches: one row per family cell, or one row shared by all."""

    num: np.ndarray             # (Fa, n) float64
    kind: np.ndarray            # (Fa, n) int8
    text: np.ndarray | None     # (Fa, n) object

    @classmethod
    def of(cls, v: Val) -> _Keys:
        """Every entry of v's blocks, row-major."""
        fa = v.num.shape[0]
        num = v.num.detach().cpu().numpy().reshape(fa, -1)
        text = np.broadcast_to(v.text, v.num.shape).reshape(fa, -1) if v.text is not None else None
        return cls(num, v.kinds().reshape(fa, -1), text)

    @classmethod
    def first_column(cls, v: Val) -> _Keys:
        keys = cls.of(v)
        h, w = v.num.shape[1:]
        cut = slice(None, h * w, w)     # row-major: every w-th entry is the first column
        return cls(keys.num[:, cut], keys.kind[:, cut], None if keys.text is None else keys.text[:, cut])


def _locate(x: Val, mode: np.ndarray, keys: _Keys) -> np.ndarray:
    """0-based position in `keys` of each entry of the lookup value x (F, h, w), or -1."""
    shape = tuple(mode.shape)
    kinds = np.broadcast_to(x.kinds(), shape)
    num = np.broadcast_to(x.num.detach().cpu().numpy(), shape)
    pos = np.full(shape, -1, dtype=np.int64)
    for kind in (NUM, BOOL):     # numbers match only numbers, booleans only booleans
        sel = kinds == kind
        if sel.any():
            f = np.nonzero(sel)[0]
            pos[sel] = _search_numbers(num[sel], mode[sel], f, keys.num, keys.kind == kind)
    sel = kinds == TEXT
    if sel.any():
        text = np.broadcast_to(x.text, shape)
        f = np.nonzero(sel)[0]
        pos[sel] = _search_text(text[sel], mode[sel], f, keys)
    return pos


def _search_numbers(x: np.ndarray, mode: np.ndarray, f: np.ndarray, vals: np.ndarray,
                    valid: np.ndarray) -> np.ndarray:
    """Positions for numeric queries x (one per entry; f: its family cell) among vals[valid]."""
    row = f if vals.shape[0] > 1 else np.zeros_like(f)
    pos = np.full(x.shape, -1, dtype=np.int64)
    exact = mode == EXACT
    if exact.any():
        pos[exact] = _exact_numbers(x[exact], row[exact], vals, valid)
    if (~exact).any():
        pos[~exact] = _binary_search(x[~exact], mode[~exact], row[~exact], vals, valid)
    return pos


def _exact_numbers(x: np.ndarray, row: np.ndarray, vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if vals.shape[0] == 1:
        # One range shared by every cell: sort it once and binary-search each query, so a
        # lookup copied down n rows into an n-row table costs n log n, not n^2. The stable
        # sort keeps equal values in sheet order: the leftmost equal is the first match.
        at = np.flatnonzero(valid[0])
        v = vals[0, at]
        order = np.argsort(v, kind="stable")
        sv = v[order]
        i = np.minimum(np.searchsorted(sv, x, side="left"), max(len(sv) - 1, 0))
        found = (i < len(sv)) & (sv[i] == x) if len(sv) else np.zeros(x.shape, bool)
        return np.where(found, at[order[i]] if len(sv) else -1, -1)
    eq = (vals[row] == x[:, None]) & valid[row]
    return np.where(eq.any(axis=1), eq.argmax(axis=1), -1)


def bisect(keys: list, x: object, up: bool) -> int:
    """Excel's approximate match over `keys` (entries of the lookup value's kind, in sheet
    order), one query: the 0-based position found, or -1 (#N/A).

    The bisection is LibreOffice's (its MATCH and LOOKUP over arrays), which gives Excel's
    answers where they are known on unsorted data (MATCH(1,{1,0}) is 1; a lookup value above
    every entry finds the last one): first/last bracket the search, the middle entry is
    first + (last - first) // 2; an entry equal to x ends it at the last entry of the run of
    equal entries that follows; otherwise, when first and last are neighbours, the answer is
    first, or last where last is the final entry and still <= x (>= x descending)."""
    m = len(keys)
    if m == 0:
        return -1
    first, last, hit = 0, m - 1, 0
    while last > first:
        span = last - first
        mid = first + span // 2
        k = keys[mid]
        if k == x:
            while mid + 1 < m and keys[mid + 1] == x:
                mid += 1
            return mid
        lt = k < x
        if span == 1:
            hit = last if lt == up else first
            break
        if lt == up:
            first = mid
        else:
            last = mid
    k = keys[hit]
    if hit == m - 1 and (k <= x if up else k >= x):
        return hit
    return hit - 1


def run_ends(packed: np.ndarray, count: np.ndarray) -> np.ndarray:
    """For each packed entry (Fa, n), the last position of the run of equal entries starting
    there (runs stop at each row's count of valid entries)."""
    n = packed.shape[1]
    at = np.arange(n)
    brk = np.ones(packed.shape, bool)
    brk[:, :-1] = packed[:, 1:] != packed[:, :-1]
    brk |= at[None, :] >= count[:, None] - 1
    idx = np.where(brk, at, n - 1)
    return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]


def _binary_search(x: np.ndarray, mode: np.ndarray, row: np.ndarray, vals: np.ndarray,
                   valid: np.ndarray) -> np.ndarray:
    """bisect() for all numeric queries at once, among the entries of the query's kind (the
    others are skipped, kept in order). Every query runs n.bit_length() + 1 steps (enough for
    any: each halves last - first), the ones already done unchanged."""
    n = vals.shape[1]
    if n == 0:
        return np.full(x.shape, -1, dtype=np.int64)
    order = np.argsort(~valid, axis=1, kind="stable")          # valid entries first, in order
    packed = np.take_along_axis(vals, order, axis=1)
    count = valid.sum(axis=1)
    ends = run_ends(packed, count)
    m = count[row]
    up = mode > 0
    first = np.zeros(x.shape, np.int64)
    last = m - 1
    hit = np.zeros(x.shape, np.int64)
    found = np.full(x.shape, -1, np.int64)      # an entry equal to x: the end of its run
    done = m <= 0
    for _ in range(n.bit_length() + 1):
        span = last - first
        active = ~done & (span > 0)
        if not active.any():
            break
        mid = np.clip(first + span // 2, 0, n - 1)
        v = packed[row, mid]
        eq = active & (v == x)
        lt = v < x
        found = np.where(eq, ends[row, mid], found)
        one = active & ~eq & (span == 1)
        hit = np.where(one, np.where(lt == up, last, first), hit)
        more = active & ~eq & (span > 1)
        first = np.where(more & (lt == up), mid, first)
        last = np.where(more & (lt != up), mid, last)
        done = done | eq | one
    vh = packed[row, np.clip(hit, 0, n - 1)]
    tail = (hit == m - 1) & np.where(up, vh <= x, vh >= x)
    res = np.where(found >= 0, found, np.where(tail, hit, hit - 1))
    res = np.where(m <= 0, -1, res)
    return np.where(res >= 0, order[row, np.clip(res, 0, n - 1)], -1)


class _TextIndex:
    """One row of searched entries' text, lower-cased: for exact, wildcard and binary search."""

    def __init__(self, kinds: np.ndarray, text: np.ndarray | None) -> None:
        self.pos = np.flatnonzero(kinds == TEXT)
        self.keys = [str(text[i]).lower() for i in self.pos] if text is not None else []
        self.first: dict[str, int] = {}
        for k, p in zip(self.keys, self.pos.tolist()):
            self.first.setdefault(k, p)

    def find(self, s: str, mode: int) -> int:
        s = s.lower()
        if mode == EXACT:
            if _WILDCARD.search(s):
                rx = wildcard(s)
                return next((int(p) for k, p in zip(self.keys, self.pos) if rx.fullmatch(k)), -1)
            return self.first.get(s, -1)
        at = bisect(self.keys, s, mode > 0)
        return int(self.pos[at]) if at >= 0 else -1


def _search_text(x: np.ndarray, mode: np.ndarray, f: np.ndarray, keys: _Keys) -> np.ndarray:
    """Text queries one by one (the exact path may loop over the family's cells)."""
    shared = keys.kind.shape[0] == 1
    indexes: dict[int, _TextIndex] = {}
    out = np.empty(x.shape, dtype=np.int64)
    for i, (s, m, cell) in enumerate(zip(x.tolist(), mode.tolist(), f.tolist())):
        r = 0 if shared else cell
        ix = indexes.get(r)
        if ix is None:
            ix = indexes[r] = _TextIndex(keys.kind[r], keys.text[r] if keys.text is not None else None)
        out[i] = ix.find(s, m)
    return out


# -- the functions ---------------------------------------------------------------------

@excel("MATCH", "Lookup & Reference", min_args=2, max_args=3, differentiable=False, args="VRV")
def match(args: list[Val | None], ctx: Context) -> Val:
    x, arr = argument(args, 0, ctx), argument(args, 1, ctx)
    # Type omitted: 1. Given but empty (MATCH(x,r,)): 0. Only its sign counts.
    typ = argument(args, 2, ctx, 1.0)
    x, typ = fit([x, typ])
    shape = _shape(x, typ, Val(arr.num[:, :1, :1], NUM))
    t = _numbers(typ)
    mode = np.broadcast_to(np.sign(np.nan_to_num(t.num)).astype(np.int64), shape)
    h, w = arr.num.shape[1:]
    if h != 1 and w != 1:       # only a single row or column can be searched
        pos = np.full(shape, -1, dtype=np.int64)
    else:
        try:
            pos = _locate(x, mode, _Keys.of(arr))
        except HostRead:        # x or the range depends on the parameters: search in torch
            if ctx.checked or x.uniform() not in (NUM, BOOL):
                raise
            fa = arr.num.shape[0]
            at = lookup_torch.locate_val(x, mode, arr.num.reshape(fa, -1), arr.kinds().reshape(fa, -1))
            num = torch.where(at >= 0, (at + 1).to(torch.float64), float("nan"))
            return _finish(Val(num, NUM), _merge(shape, _codes(x), t.err, _direct_error(arr)))
    err = _merge(shape, _codes(x), t.err, _direct_error(arr), _where(pos < 0, NA))
    num = torch.as_tensor((pos + 1).astype(np.float64), device=ctx.device)
    return _finish(Val(num, NUM), err)


def _on_host(v: Val) -> np.ndarray | None:
    """v's numbers (truncated, as an index) where they may be read: None where v depends on
    the parameters in a trace."""
    try:
        return _whole(_numbers(v).num)
    except HostRead:
        return None


def _direct_error(v: Val) -> np.ndarray | None:
    """An error given straight as a value (not inside a range) is the result, as elsewhere."""
    if v.is_ref or v.num.shape[1:] != (1, 1):
        return None
    c = _codes(v)
    return None if c is None else c[:, :1, :1]


def _table_lookup(args: list[Val | None], ctx: Context, across: bool) -> Val:
    """VLOOKUP (down the first column) and HLOOKUP (across the first row, via a transpose)."""
    x, table, idx = argument(args, 0, ctx), argument(args, 1, ctx), argument(args, 2, ctx)
    # range_lookup omitted: TRUE (approximate). Given but empty (VLOOKUP(x,t,2,)): FALSE.
    approx = argument(args, 3, ctx, True)
    if across:
        table = _transposed(table)
    x, idx, approx = fit([x, idx, approx])
    h, w = table.num.shape[1:]
    shape = _shape(x, idx, approx, Val(table.num[:, :1, :1], NUM))
    a = _numbers(approx, to_bool)
    mode = np.broadcast_to(np.where(np.nan_to_num(a.num) != 0, ASCENDING, EXACT), shape)
    try:
        k = _numbers(idx)
        col = np.broadcast_to(_whole(k.num), shape)
        pos = _locate(x, mode, _Keys.first_column(table))
    except HostRead as exc:     # x, the first column or idx depends on the parameters
        if ctx.checked or x.uniform() not in (NUM, BOOL) or not idx.numeric:
            raise
        return _finish(_table_lookup_traced(x, table, idx, mode, exc),
                       _merge(shape, _codes(x), _direct_error(table), a.err))
    err = _merge(shape, _codes(x), _direct_error(table), k.err, a.err, _where(col < 1, VALUE),
                 _where(col > w, REF), _where(pos < 0, NA))
    ok = (pos >= 0) & (col >= 1) & (col <= w)
    found = _take(table, pos * w + (col - 1), ok)
    found.is_ref = False        # VLOOKUP gives a value, not a reference
    return _finish(found, err)


def _table_lookup_traced(x: Val, table: Val, idx: Val, mode: np.ndarray, exc: HostRead) -> Val:
    """_table_lookup's positions and gather as torch ops; NaN where it gives an error."""
    w = table.num.shape[2]
    kinds = table.kinds()
    cols = _on_host(idx)        # a constant column number: only that column's kinds matter
    if cols is not None:
        kinds = kinds[:, :, np.unique(cols[(cols >= 1) & (cols <= w)]) - 1]
    kind = lookup_torch.picked_kind(kinds, exc)
    pos = lookup_torch.locate_val(x, mode, table.num[:, :, 0], table.kinds()[:, :, 0])
    col, col_ok = lookup_torch.index_of(lookup_torch.whole(idx.num).expand(mode.shape), w, zero_ok=False)
    num = lookup_torch.take(table.num, pos * w + col, (pos >= 0) & col_ok)
    return Val(num, kind)


@excel("VLOOKUP", "Lookup & Reference", min_args=3, max_args=4, args="VRVV")
def vlookup(args: list[Val | None], ctx: Context) -> Val:
    return replace(_table_lookup(args, ctx, across=False), blank_is_value=True)


@excel("HLOOKUP", "Lookup & Reference", min_args=3, max_args=4, args="VRVV")
def hlookup(args: list[Val | None], ctx: Context) -> Val:
    return replace(_table_lookup(args, ctx, across=True), blank_is_value=True)


def _slice(v: Val, rows: slice, cols: slice) -> Val:
    """The entries of v's blocks in rows x cols (a row or column of a table)."""
    kind = v.kind[:, rows, cols] if isinstance(v.kind, np.ndarray) else v.kind
    text = np.broadcast_to(v.text, v.num.shape)[:, rows, cols] if v.text is not None else None
    return Val(v.num[:, rows, cols], kind, text, is_ref=v.is_ref)


@excel("LOOKUP", "Lookup & Reference", min_args=2, max_args=3, args="VRR")
def lookup(args: list[Val | None], ctx: Context) -> Val:
    """LOOKUP(x, lookup_vector, result_vector) and LOOKUP(x, array): always an approximate
    match (MATCH type 1). The array form searches the first row of an array wider than tall,
    else its first column, and returns the entry of the last row or column. A lookup_vector
    of more than one row and column is searched the same way, and a result_vector of more
    than one row and column is #VALUE!, as LibreOffice has them (Excel documents neither)."""
    x, arr = argument(args, 0, ctx), argument(args, 1, ctx)
    res = args[2] if len(args) > 2 else None
    h, w = arr.num.shape[1:]
    across = w > h
    keys = _slice(arr, slice(0, 1), slice(None)) if across else _slice(arr, slice(None), slice(0, 1))
    if res is None:             # the array form: the last row or column holds the results
        res = _slice(arr, slice(h - 1, h), slice(None)) if across else _slice(arr, slice(None), slice(w - 1, w))
    shape = _shape(x, Val(arr.num[:, :1, :1], NUM), Val(res.num[:, :1, :1], NUM))
    if res.num.shape[1] != 1 and res.num.shape[2] != 1:
        return _finish(Val(torch.zeros(shape, dtype=torch.float64, device=ctx.device), NUM),
                       _merge(shape, _codes(x), np.full(shape, VALUE, dtype=object)))
    length = res.num.shape[1] * res.num.shape[2]
    mode = np.full(shape, ASCENDING, dtype=np.int64)
    keys_flat = keys.num.reshape(keys.num.shape[0], -1)
    try:
        pos = _locate(x, mode, _Keys.of(keys))
    except HostRead as exc:     # x or the searched entries depend on the parameters
        if ctx.checked or x.uniform() not in (NUM, BOOL):
            raise
        at = lookup_torch.locate_val(x, mode, keys_flat, keys.kinds().reshape(keys_flat.shape[0], -1))
        kind = lookup_torch.picked_kind(res.kinds(), exc)
        if res.is_ref and length < keys_flat.shape[1]:
            raise UnsupportedFormula("LOOKUP with a result_vector shorter than its lookup_vector") from exc
        num = lookup_torch.take(res.num, at.clamp(max=length - 1), (at >= 0) & (at < length))
        return replace(_finish(Val(num, kind), _merge(shape, _codes(x), _direct_error(arr))), blank_is_value=True)
    beyond = pos >= length
    if beyond.any() and res.is_ref:
        # Excel (and LibreOffice) read past the end of a short result range, cells xl2nn
        # does not hold: no value rather than a guess.
        raise UnsupportedFormula("LOOKUP finds a position past the end of its result_vector")
    err = _merge(shape, _codes(x), _direct_error(arr), _where((pos < 0) | beyond, NA))
    ok = (pos >= 0) & ~beyond
    found = _take(res, np.where(ok, pos, 0), ok)
    found.is_ref = False
    return replace(_finish(found, err), blank_is_value=True)


@excel("INDEX", "Lookup & Reference", min_args=2, max_args=4, args="RVV")
def index(args: list[Val | None], ctx: Context) -> Val:
    arr, row, col = argument(args, 0, ctx), argument(args, 1, ctx), argument(args, 2, ctx)
    # INDEX(one row, n) counts along the row; with a column argument given, the row must be 1.
    along_row = len(args) == 2 and arr.num.shape[1] == 1
    # An error given as the range, or a bad area_num, applies to the whole result.
    codes = [c for c in (_direct_error(arr), _area_error(args[3] if len(args) > 3 else None))
             if c is not None]
    area_err = _merge(np.broadcast_shapes(*(c.shape for c in codes)), *codes) if codes else None
    cells = row.num.shape[1:] == (1, 1) and col.num.shape[1:] == (1, 1)
    try:
        if cells:
            return _index_cells(arr, row, col, along_row, area_err)
        return _index_entries(arr, row, col, along_row, area_err)
    except HostRead as exc:     # a row or column number depends on the parameters
        if ctx.checked or not (row.numeric and col.numeric):
            raise
        return _finish(_index_traced(arr, row, col, along_row, cells, area_err, exc), area_err)


def _index_traced(arr: Val, row: Val, col: Val, along_row: bool, cells: bool,
                  area_err: np.ndarray | None, exc: HostRead) -> Val:
    """_index_cells (cells) or _index_entries as torch ops, one entry per row and column
    number; NaN where they give an error."""
    h, w = arr.num.shape[1:]
    kind = lookup_torch.picked_kind(arr.kinds(), exc)
    if not cells:
        row, col = fit([row, col])
    shape = _shape(Val(arr.num[:, :1, :1], NUM), row, col)
    if area_err is not None:
        shape = (max(shape[0], area_err.shape[0]),) + tuple(shape[1:])
    r, c = lookup_torch.whole(row.num), lookup_torch.whole(col.num)
    if along_row:   # INDEX(one row, n): n counts along the row
        r, c, row, col = torch.ones_like(r), r, None, row
    if cells:       # a constant 0 asks for a whole row or column, an array: the exact path's
        for v, extent in ((row, h), (col, w)):
            n = _on_host(v) if v is not None else None
            if n is not None and extent > 1 and (n == 0).any():
                raise exc
    # A 0 is the whole row or column: in a cell, one entry where the extent is 1, else an
    # array (a dynamic 0 there comes out as NaN); in an array of numbers it reads as 1.
    ri, r_ok = lookup_torch.index_of(r.expand(shape), h, zero_ok=not cells or h == 1)
    ci, c_ok = lookup_torch.index_of(c.expand(shape), w, zero_ok=not cells or w == 1)
    return Val(lookup_torch.take(arr.num, ri * w + ci, r_ok & c_ok), kind, is_ref=arr.is_ref)


def _area_error(area: Val | None) -> np.ndarray | None:
    """INDEX's area_num: a single range has only area 1."""
    if area is None:
        return None
    a = _numbers(area)
    n = _whole(a.num[:, :1, :1])
    return _merge(n.shape, None if a.err is None else a.err[:, :1, :1], _where(n < 1, VALUE),
                  _where(n > 1, REF))


def _index_cells(arr: Val, row: Val, col: Val, along_row: bool, area_err: np.ndarray | None) -> Val:
    """One row and column number per family cell: a cell, or a whole row (column 0), a whole
    column (row 0) or the whole range (both 0)."""
    h, w = arr.num.shape[1:]
    f = max(_shape(arr, row, col)[0], 1 if area_err is None else area_err.shape[0])
    rn, cn = _numbers(row), _numbers(col)
    r = np.broadcast_to(_whole(rn.num[:, 0, 0]), (f,))
    c = np.broadcast_to(_whole(cn.num[:, 0, 0]), (f,))
    if along_row:
        r, c = np.where(r != 0, 1, 0), r
    area = None if area_err is None else np.broadcast_to(area_err[:, 0, 0], (f,))
    r_err = None if rn.err is None else rn.err[:, 0, 0]
    c_err = None if cn.err is None else cn.err[:, 0, 0]
    err = _merge((f,), r_err, c_err, area, _where((r < 0) | (c < 0), VALUE), _where((r > h) | (c > w), REF))
    ok = ~_SET(err).astype(bool) if err is not None else np.ones(f, bool)
    # Cells of the family may want blocks of different sizes (a row number 0 in some cells
    # only): all get the largest, the smaller ones padded with empty cells.
    oh = h if (ok & (r == 0)).any() else 1
    ow = w if (ok & (c == 0)).any() else 1
    ii, jj = np.arange(oh).reshape(1, -1, 1), np.arange(ow).reshape(1, 1, -1)
    r3, c3 = r.reshape(-1, 1, 1), c.reshape(-1, 1, 1)
    rr = np.where(r3 == 0, ii, r3 - 1 + 0 * ii)
    cc = np.where(c3 == 0, jj, c3 - 1 + 0 * jj)
    pad = ((r3 != 0) & (ii > 0)) | ((c3 != 0) & (jj > 0))
    pad = pad & ok.reshape(-1, 1, 1)
    good = ok.reshape(-1, 1, 1) & ~pad
    flat = np.broadcast_to(rr * w + cc, (f, oh, ow))
    out = _take(arr, flat, np.broadcast_to(good, flat.shape))
    return _finish(out, None if err is None else err.reshape(-1, 1, 1), pad)


def _index_entries(arr: Val, row: Val, col: Val, along_row: bool, area_err: np.ndarray | None) -> Val:
    """Arrays of row and column numbers (an array formula): one cell per entry. A 0 there
    reads as 1, the first cell of the row or column asked for, as LibreOffice does."""
    h, w = arr.num.shape[1:]
    row, col = fit([row, col])
    shape = _shape(Val(arr.num[:, :1, :1], NUM), row, col)
    if area_err is not None:        # area_num may differ from cell to cell: its F counts too
        shape = (max(shape[0], area_err.shape[0]),) + tuple(shape[1:])
    rn, cn = _numbers(row), _numbers(col)
    r = np.broadcast_to(_whole(rn.num), shape)
    c = np.broadcast_to(_whole(cn.num), shape)
    if along_row:
        r, c = np.where(r != 0, 1, 0), r
    err = _merge(shape, rn.err, cn.err, area_err, _where((r < 0) | (c < 0), VALUE),
                 _where((r > h) | (c > w), REF))
    r, c = np.maximum(r, 1), np.maximum(c, 1)
    ok = ~_SET(err).astype(bool) if err is not None else np.ones(shape, bool)
    out = _take(arr, (r - 1) * w + (c - 1), ok)
    return _finish(out, err)


@excel("CHOOSE", "Lookup & Reference", min_args=2, args="VP")
def choose(args: list[Val | None], ctx: Context) -> Val:
    idx = argument(args, 0, ctx)
    options = [argument(args, i, ctx) for i in range(1, len(args))]
    k = _numbers(idx)
    n = _whole(k.num)
    bad = (n < 1) | (n > len(options))
    if idx.num.shape[1:] == (1, 1) and k.err is None and not bad.any() and (n == n.flat[0]).all():
        return options[int(n.flat[0]) - 1]      # the argument itself: a range stays a range
    return _choose_entries(idx, options, ctx)


def _choose_entries(idx: Val, options: list[Val], ctx: Context) -> Val:
    """An index that differs from cell to cell (or an array of them): entry by entry."""
    idx, *options = fit([idx] + options)
    shape = _shape(idx, *options)
    k = _numbers(idx)
    n = np.broadcast_to(_whole(k.num), shape)
    err = _merge(shape, k.err, _where((n < 1) | (n > len(options)), VALUE))
    num = torch.zeros(shape, dtype=torch.float64, device=ctx.device)
    kinds = np.full(shape, EMPTY, dtype=np.int8)
    text = np.full(shape, None, dtype=object)
    used = []
    for j, opt in enumerate(options, start=1):
        sel = n == j
        if not sel.any():
            continue
        used.append(opt)
        num = torch.where(torch.as_tensor(sel, device=num.device), opt.num, num)
        kinds[sel] = np.broadcast_to(opt.kinds(), shape)[sel]
        if opt.text is not None:
            text[sel] = np.broadcast_to(opt.text, shape)[sel]
    has_text = bool(((kinds == TEXT) | (kinds == ERROR)).any())
    flat = kinds.reshape(-1)
    kind: int | np.ndarray = int(flat[0]) if (flat == flat[0]).all() else kinds
    out = Val(num, kind, text if has_text else None, is_ref=bool(used) and all(o.is_ref for o in used))
    return _finish(out, err)


def _extent(args: list[Val | None], ctx: Context, axis: int) -> Val:
    """ROWS and COLUMNS: the size of a range or array; an error passes through. A single
    value that is not a reference is refused: a one-entry array ({1}, TRANSPOSE(A1), a FILTER
    keeping one row) is 1, a plain number #VALUE! in LibreOffice (Excel does not document it),
    and the two arrive here alike."""
    v = argument(args, 0, ctx)
    size = Val(torch.full((1, 1, 1), float(v.num.shape[axis]), dtype=torch.float64, device=ctx.device), NUM)
    if v.is_ref or v.num.shape[1:] != (1, 1):
        return size
    codes = _codes(v)
    if codes is not None and all(c is not None for c in np.asarray(codes, dtype=object).reshape(-1)):
        return _finish(size, _merge(v.num.shape, codes, np.full(v.num.shape, VALUE, dtype=object)))
    raise UnsupportedFormula("ROWS or COLUMNS of a single value that is not a reference: a one-entry array "
                             "counts 1, a plain number is #VALUE! in LibreOffice, and xl2nn cannot tell them apart")


@excel("ROWS", "Lookup & Reference", min_args=1, max_args=1, differentiable=False, args="R")
def rows(args: list[Val | None], ctx: Context) -> Val:
    return _extent(args, ctx, 1)


@excel("COLUMNS", "Lookup & Reference", min_args=1, max_args=1, differentiable=False, args="R")
def columns(args: list[Val | None], ctx: Context) -> Val:
    return _extent(args, ctx, 2)


__all__ = ["bisect", "choose", "columns", "hlookup", "index", "lookup", "match", "rows", "run_ends",
           "vlookup"]
