"""Excel 365's array functions: stacking and slicing (HSTACK, VSTACK, TAKE, DROP, CHOOSEROWS,
CHOOSECOLS, TOCOL, TOROW), ordering and selecting (SORT, SORTBY, FILTER, UNIQUE), and the
functions that apply a LAMBDA (BYROW, BYCOL, MAP, MAKEARRAY, REDUCE, SCAN).

How each lowers. The slicing functions take constant counts and indices (the same in every
cell of a family), so they are narrow / index_select / cat with constant indices: traced, and
the gradient flows to the entries they keep; HSTACK/VSTACK pad a shorter part with #N/A (NaN
in training). SORT and SORTBY of numbers sort with torch
(torch.sort, stable, then gather): the order follows the weights each step and the gradient
reaches the values. FILTER, UNIQUE and TOCOL/TOROW that drop entries decide which entries to
keep on the host: for parameter-dependent values that read raises HostRead while tracing,
so their cells run interpreted (exact, each step), and a spill whose size then changes is
refused (compiler/spill.py). Copies of one formula whose arrays come out in different sizes
raise Ragged: the recalculation computes them cell by cell.

The LAMBDA functions get their LAMBDA unevaluated (LAZY, called by the interpreter in place of
the usual evaluate-the-arguments-first): BYROW, BYCOL, MAP and MAKEARRAY evaluate the body
once, batched along the family axis of Val (each row, column or entry is one more "cell":
a (F, h, w) array becomes F*h rows of 1×w for BYROW), so SUM in the body is one row-wise
reduction; REDUCE and SCAN are a loop, unrolled into the trace.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import numpy as np
import torch

from ..cells import CellError
from ..errors import UnsupportedFormula
from ..formula.ast import Call, Missing, Node, Text, refs
from .registry import Context, excel
from .values import BOOL, EMPTY, ERROR, NUM, NUM_ERR, TEXT, VALUE, Val, scalar, to_number, to_objects

CALC = CellError("#CALC!")


class Ragged(UnsupportedFormula):
    """The copies of one formula make arrays of different sizes (FILTER keeps different rows
    in each): one family cannot hold them; the recalculation computes them one by one."""


# -- Val plumbing ---------------------------------------------------------------------------

def _texts(v: Val) -> np.ndarray | None:
    return np.broadcast_to(v.text, v.num.shape) if v.text is not None else None


def _make(num: torch.Tensor, kinds: np.ndarray, text: np.ndarray | None, is_ref: bool = False,
          exact: bool = False) -> Val:
    """A Val from entry-wise kinds and texts, compacted where they are uniform."""
    flat = kinds.reshape(-1)
    k: int | np.ndarray = int(flat[0]) if flat.size and (flat == flat[0]).all() else np.ascontiguousarray(kinds)
    if text is not None and not ((kinds == TEXT) | (kinds == ERROR)).any():
        text = None
    return Val(num, k, None if text is None else np.ascontiguousarray(text), is_ref=is_ref, exact=exact)


def _expand(v: Val, f: int) -> Val:
    """v with f family cells (a value shared by every cell, F = 1, repeated)."""
    if v.num.shape[0] == f:
        return v
    shape = (f,) + tuple(v.num.shape[1:])
    kind = v.kind if not isinstance(v.kind, np.ndarray) else np.broadcast_to(v.kinds(), shape)
    text = None if v.text is None else np.broadcast_to(_texts(v), shape)
    return Val(v.num.expand(shape), kind, text, v.is_ref, v.blank_is_value, v.exact)


def _reshape(v: Val, shape: tuple[int, ...], transpose: bool = False) -> Val:
    """v's entries laid out as `shape` (after swapping rows and columns, with transpose)."""
    num = v.num.transpose(1, 2) if transpose else v.num
    kind: int | np.ndarray = v.kind
    if isinstance(kind, np.ndarray):
        kinds = v.kinds()
        kind = (kinds.transpose(0, 2, 1) if transpose else kinds).reshape(shape)
    text = _texts(v)
    if text is not None:
        text = (text.transpose(0, 2, 1) if transpose else text).reshape(shape)
    return Val(num.reshape(shape), kind, text, v.is_ref, v.blank_is_value, v.exact)


def _repeat(v: Val, base: int, k: int) -> Val:
    """Each of the `base` family cells of v repeated k times (in a batch of base*k); a shared
    value (F = 1) stays as it is. expand, not repeat_interleave (whose shape may depend on data)."""
    f = v.num.shape[0]
    if k == 1 or f == 1:
        return v
    if f != base:
        raise UnsupportedFormula(f"a LAMBDA's value has {f} family cells where {base} were expected")
    h, w = v.num.shape[1:]
    num = v.num.unsqueeze(1).expand(f, k, h, w).reshape(f * k, h, w)
    kind = v.kind if not isinstance(v.kind, np.ndarray) else np.repeat(v.kinds(), k, axis=0)
    text = None if v.text is None else np.repeat(_texts(v), k, axis=0)
    return Val(num, kind, text, v.is_ref, v.blank_is_value, v.exact)


def _select(v: Val, ri: np.ndarray, ci: np.ndarray) -> Val:
    """Rows ri and columns ci of v (the same for every family cell; -1 is #N/A padding)."""
    num = v.num
    out = _take(_take(num, 1, np.maximum(ri, 0)), 2, np.maximum(ci, 0))
    pad = (ri < 0)[:, None] | (ci < 0)[None, :]
    kinds = v.kinds()[:, np.maximum(ri, 0)][:, :, np.maximum(ci, 0)]
    text = _texts(v)
    text = None if text is None else text[:, np.maximum(ri, 0)][:, :, np.maximum(ci, 0)]
    if pad.any():
        out = torch.where(torch.as_tensor(pad, device=num.device), torch.full((), math.nan, dtype=num.dtype,
                                                                               device=num.device), out)
        kinds = kinds.copy()
        kinds[:, pad] = ERROR
        text = np.empty(kinds.shape, dtype=object) if text is None else text.copy()
        text[:, pad] = "#N/A"
    return _make(out, kinds, text, is_ref=v.is_ref and not pad.any(), exact=v.exact)


def _take(x: torch.Tensor, dim: int, idx: np.ndarray) -> torch.Tensor:
    """x's entries idx along dim: a view (narrow) for a run of consecutive ones, else a gather."""
    n = len(idx)
    if n and (idx == np.arange(idx[0], idx[0] + n)).all():
        return x if n == x.shape[dim] else x.narrow(dim, int(idx[0]), n)
    return x.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=x.device))


def _cat(parts: list[Val], dim: int) -> Val:
    f = max(p.num.shape[0] for p in parts)
    parts = [_expand(p, f) for p in parts]
    num = torch.cat([p.num for p in parts], dim=dim)
    kinds = np.concatenate([p.kinds() for p in parts], axis=dim)
    texts = None
    if any(p.text is not None for p in parts):
        texts = np.concatenate([_texts(p) if p.text is not None else np.empty(p.num.shape, dtype=object)
                                for p in parts], axis=dim)
    return _make(num, kinds, texts, exact=all(p.exact for p in parts))


def _err(e: CellError, ctx: Context) -> Val:
    return scalar(e, ctx.device)


def _first_error(v: Val) -> CellError | None:
    """A lone error value given as an argument (an argument that is an error, not an array holding one)."""
    if v.num.shape[1:] == (1, 1) and v.num.shape[0] == 1 and v.has(ERROR):
        return to_objects(v)[0, 0, 0]
    return None


def _same_in_every_cell(objs: np.ndarray) -> None:
    if objs.shape[0] > 1 and any(not np.array_equal(objs[i], objs[0]) for i in range(1, objs.shape[0])):
        raise Ragged("the sizes of the arrays differ from cell to cell")


def _ints(v: Val | None) -> list[int] | CellError | None:
    """A count or index argument as whole numbers (an array: each entry, row by row); None
    when left out. Sizes are shapes: the same in every cell of a family (else Ragged)."""
    if v is None:
        return None
    objs = to_objects(v)
    _same_in_every_cell(objs)
    out = []
    for x in objs[0].reshape(-1):
        n = to_number(x)
        if isinstance(n, CellError):
            return n
        if not math.isfinite(n):
            return NUM_ERR
        out.append(int(math.trunc(n)))
    return out


def _int(v: Val | None) -> int | CellError | None:
    got = _ints(v)
    if got is None or isinstance(got, CellError):
        return got
    return got[0] if len(got) == 1 else VALUE


def _flag(v: Val | None, default: bool) -> bool | CellError:
    n = _int(v)
    if n is None:
        return default
    return n if isinstance(n, CellError) else n != 0


def _arg(args: list[Val | None], i: int) -> Val | None:
    return args[i] if i < len(args) else None


def cell_of(v: Val, i: int) -> Val:
    """Family cell i of v alone (a value shared by every cell stays as it is)."""
    if v.num.shape[0] == 1:
        return v
    kind = v.kind if not isinstance(v.kind, np.ndarray) else v.kinds()[i:i + 1]
    text = None if v.text is None else _texts(v)[i:i + 1]
    return Val(v.num[i:i + 1], kind, text, v.is_ref, v.blank_is_value, v.exact)


def cell_by_cell(node: Node, ctx: Any, n: int, ev: "Evaluate") -> list[Val]:
    """Each of a family's n cells evaluated on its own: for copies of a formula whose arrays
    come out in different sizes (Ragged)."""
    out = []
    for i in range(n):
        sub = copy.copy(ctx)
        sub.memo = {}
        sub.resolve = lambda ref, i=i: cell_of(ev(ref, ctx), i)
        _one_cell_where(sub, ctx, i)
        out.append(ev(node, sub))
    return out


def _one_cell_where(sub: Any, ctx: Any, i: int) -> None:
    """The family-cell context (ROW(), OFFSET, ...) of cell i alone."""
    where = getattr(ctx, "where", None)
    if where is not None and len(where.rows) > 1:
        sub.where = dataclasses.replace(where, rows=where.rows[i:i + 1], cols=where.cols[i:i + 1], memo=None)


# -- stacking and slicing ---------------------------------------------------------------------

@excel("HSTACK", "Lookup & Reference", min_args=1, args="A")
def hstack(args: list[Val | None], ctx: Context) -> Val:
    """Side by side; a shorter array is padded with #N/A (not repeated)."""
    parts = [a if a is not None else scalar(None, ctx.device) for a in args]
    h = max(p.num.shape[1] for p in parts)
    return _cat([_select(p, _padded(p.num.shape[1], h), np.arange(p.num.shape[2])) for p in parts], 2)


@excel("VSTACK", "Lookup & Reference", min_args=1, args="A")
def vstack(args: list[Val | None], ctx: Context) -> Val:
    parts = [a if a is not None else scalar(None, ctx.device) for a in args]
    w = max(p.num.shape[2] for p in parts)
    return _cat([_select(p, np.arange(p.num.shape[1]), _padded(p.num.shape[2], w)) for p in parts], 1)


def _padded(n: int, total: int) -> np.ndarray:
    return np.concatenate([np.arange(n), np.full(total - n, -1)])


def _take_index(n: int, k: int | None) -> np.ndarray | CellError:
    if k is None:
        return np.arange(n)
    if k == 0:
        return CALC
    m = min(abs(k), n)
    return np.arange(m) if k > 0 else np.arange(n - m, n)


def _drop_index(n: int, k: int | None) -> np.ndarray | CellError:
    # 0 drops none. (Microsoft's DROP page repeats TAKE's "#CALC! when rows or columns is 0";
    # for DROP nothing is empty then, and other engines keep the array: unverified in Excel.)
    if k is None or k == 0:
        return np.arange(n)
    if abs(k) >= n:
        return CALC
    return np.arange(k, n) if k > 0 else np.arange(0, n + k)


def _slice(args: list[Val | None], ctx: Context, how: Callable) -> Val:
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    rows, cols = _int(_arg(args, 1)), _int(_arg(args, 2))
    for x in (rows, cols):
        if isinstance(x, CellError):
            return _err(x, ctx)
    ri, ci = how(a.num.shape[1], rows), how(a.num.shape[2], cols)
    for x in (ri, ci):
        if isinstance(x, CellError):
            return _err(x, ctx)
    return _select(a, ri, ci)


@excel("TAKE", "Lookup & Reference", min_args=2, max_args=3, args="AV")
def take(args: list[Val | None], ctx: Context) -> Val:
    """TAKE(array, rows, [columns]): the first rows (the last, when negative); 0 is #CALC!."""
    return _slice(args, ctx, _take_index)


@excel("DROP", "Lookup & Reference", min_args=2, max_args=3, args="AV")
def drop(args: list[Val | None], ctx: Context) -> Val:
    """DROP(array, rows, [columns]): without the first rows (the last, when negative);
    dropping them all is #CALC!."""
    return _slice(args, ctx, _drop_index)


def _choose(args: list[Val | None], ctx: Context, axis: int) -> Val:
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    n = a.num.shape[axis]
    wanted: list[int] = []
    for v in args[1:]:              # an error among the indices comes before a bad index
        got = _ints(v if v is not None else scalar(None, ctx.device))
        if isinstance(got, CellError):
            return _err(got, ctx)
        wanted.extend(got or [])
    picked: list[int] = []
    for k in wanted:
        if k == 0 or abs(k) > n:
            return _err(VALUE, ctx)
        picked.append(k - 1 if k > 0 else n + k)
    idx = np.array(picked, np.int64)
    if axis == 1:
        return _select(a, idx, np.arange(a.num.shape[2]))
    return _select(a, np.arange(a.num.shape[1]), idx)


@excel("CHOOSEROWS", "Lookup & Reference", min_args=2, args="AV")
def chooserows(args: list[Val | None], ctx: Context) -> Val:
    """CHOOSEROWS(array, row_num1, ...): rows by number (from the end when negative); 0 or
    past the end is #VALUE!; an index may be an array of them."""
    return _choose(args, ctx, 1)


@excel("CHOOSECOLS", "Lookup & Reference", min_args=2, args="AV")
def choosecols(args: list[Val | None], ctx: Context) -> Val:
    return _choose(args, ctx, 2)


def _flatten(args: list[Val | None], ctx: Context, column: bool) -> Val:
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    ignore = _int(_arg(args, 1))
    by_col = _flag(_arg(args, 2), False)
    for x in (ignore, by_col):
        if isinstance(x, CellError):
            return _err(x, ctx)
    ignore = ignore or 0
    if ignore not in (0, 1, 2, 3):
        return _err(VALUE, ctx)
    f, h, w = a.num.shape
    flat = _reshape(a, (f, h * w, 1), transpose=False) if not by_col else _reshape(a, (f, h * w, 1), transpose=True)
    if ignore:
        kinds = flat.kinds()[:, :, 0]
        drop = np.zeros(kinds.shape, bool)
        if ignore in (1, 3):
            drop |= kinds == EMPTY
        if ignore in (2, 3):
            drop |= kinds == ERROR
            if not ctx.checked:     # training: a computed error is a non-finite number (host read)
                drop |= ~np.isfinite(flat.num[:, :, 0].detach().cpu().numpy()) & ((kinds == NUM) | (kinds == BOOL))
        _same_in_every_cell(np.broadcast_to(drop, (f, h * w)))
        keep = np.flatnonzero(~drop[0])
        if not len(keep):
            return _err(CALC, ctx)
        flat = _select(flat, keep, np.arange(1))
    n = flat.num.shape[1]
    return flat if column else _reshape(flat, (flat.num.shape[0], 1, n))


@excel("TOCOL", "Lookup & Reference", min_args=1, max_args=3, args="AV")
def tocol(args: list[Val | None], ctx: Context) -> Val:
    """TOCOL(array, [ignore], [scan_by_column]): one column, row by row (or column by column);
    ignore 1 skips blanks, 2 errors, 3 both."""
    return _flatten(args, ctx, True)


@excel("TOROW", "Lookup & Reference", min_args=1, max_args=3, args="AV")
def torow(args: list[Val | None], ctx: Context) -> Val:
    return _flatten(args, ctx, False)


# -- ordering and selecting -------------------------------------------------------------------

def _sort_key(x: object) -> tuple:
    """Excel's ascending order across types: numbers, text (ignoring case), FALSE, TRUE, errors."""
    if isinstance(x, CellError):
        return (3, 0)
    if isinstance(x, bool):
        return (2, x)
    if isinstance(x, (int, float)):
        return (0, x)
    return (1, str(x).lower())


def _order(keys: list[tuple[Val, bool]], n: int, ctx: Context) -> torch.Tensor | np.ndarray:
    """The stable order of n rows by the keys (each a (F, n) column Val, descending flag):
    a torch index tensor (F, n) for numbers, else a NumPy one from Excel's ordering of types."""
    if all(k.uniform() == NUM for k, _ in keys):
        f = max(k.num.shape[0] for k, _ in keys)
        order = torch.arange(n, device=keys[0][0].num.device).expand(f, n)
        for key, desc in reversed(keys):     # stable sorts, the last key first
            vals = key.num.reshape(key.num.shape[0], n).expand(f, n).gather(1, order)
            _, idx = torch.sort(vals, dim=1, descending=desc, stable=True)
            order = order.gather(1, idx)
        return order
    objs = [to_objects(k).reshape(k.num.shape[0], n) for k, _ in keys]
    f = max(o.shape[0] for o in objs)
    out = np.empty((f, n), np.int64)
    for i in range(f):
        idx = list(range(n))
        for o, (_, desc) in reversed(list(zip(objs, keys))):
            col = o[min(i, o.shape[0] - 1)]
            if any(x is None for x in col):
                raise UnsupportedFormula("SORT and SORTBY by a key with empty cells: where Excel puts "
                                         "them is not established here")
            idx.sort(key=lambda j: _sort_key(col[j]), reverse=desc)
        out[i] = idx
    return out


def _gather_rows(a: Val, order: torch.Tensor | np.ndarray) -> Val:
    """Row order[i] of a for each family cell i (F, n indices)."""
    f = max(a.num.shape[0], order.shape[0])
    a = _expand(a, f)
    h, w = a.num.shape[1:]
    if isinstance(order, torch.Tensor):
        order = order.expand(f, h)
        num = a.num.gather(1, order.unsqueeze(2).expand(f, h, w))
        if not isinstance(a.kind, np.ndarray) and a.text is None:
            return Val(num, a.kind, None, exact=a.exact)
        order = order.detach().cpu().numpy()
    else:
        order = np.array(np.broadcast_to(order, (f, h)))
        num = a.num.gather(1, torch.as_tensor(order, device=a.num.device).unsqueeze(2).expand(f, h, w))
    pick = order[:, :, None]
    kinds = np.take_along_axis(a.kinds(), pick, axis=1)
    text = _texts(a)
    text = None if text is None else np.take_along_axis(text, pick, axis=1)
    return _make(num, kinds, text, exact=a.exact)


def _sorted(a: Val, keys: list[tuple[Val, bool]], by_col: bool, ctx: Context) -> Val:
    if by_col:
        a = _reshape(a, (a.num.shape[0], a.num.shape[2], a.num.shape[1]), transpose=True)
        keys = [(_reshape(k, (k.num.shape[0], k.num.shape[2], k.num.shape[1]), transpose=True), d) for k, d in keys]
    out = _gather_rows(a, _order(keys, a.num.shape[1], ctx))
    return _reshape(out, (out.num.shape[0], out.num.shape[2], out.num.shape[1]), transpose=True) if by_col else out


def _orders(v: Val | None, n: int) -> list[bool] | CellError:
    got = _ints(v)
    if got is None:
        return [False] * n
    if isinstance(got, CellError):
        return got
    if any(x not in (1, -1) for x in got):
        return VALUE
    if len(got) == 1:
        got = got * n
    return [x == -1 for x in got] if len(got) == n else VALUE


@excel("SORT", "Lookup & Reference", min_args=1, max_args=4, args="AVVV")
def sort(args: list[Val | None], ctx: Context) -> Val:
    """SORT(array, [sort_index], [sort_order], [by_col]): rows by column sort_index (columns
    by row, with by_col), ascending (1) or descending (-1); stable; numbers before text
    before logicals before errors. Numbers sort in torch: the gradient reaches the values."""
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    if (e := _first_error(a)) is not None:
        return _err(e, ctx)
    by_col = _flag(_arg(args, 3), False)
    index = _ints(_arg(args, 1))
    if isinstance(by_col, CellError) or isinstance(index, CellError):
        return _err(by_col if isinstance(by_col, CellError) else index, ctx)
    index = index or [1]
    orders = _orders(_arg(args, 2), len(index))
    if isinstance(orders, CellError):
        return _err(orders, ctx)
    span = a.num.shape[1] if by_col else a.num.shape[2]
    if any(not 1 <= k <= span for k in index):
        return _err(VALUE, ctx)
    f, h, w = a.num.shape
    keys = [(_select(a, np.arange(h), np.array([k - 1])) if not by_col else _select(a, np.array([k - 1]), np.arange(w)), d)
            for k, d in zip(index, orders)]
    return _sorted(a, keys, by_col, ctx)


@excel("SORTBY", "Lookup & Reference", min_args=2, args="AAV")
def sortby(args: list[Val | None], ctx: Context) -> Val:
    """SORTBY(array, by_array1, [order1], ...): rows (or columns) by one-column (one-row)
    arrays as long as the array; a key of another shape is #VALUE!."""
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    if (e := _first_error(a)) is not None:
        return _err(e, ctx)
    f, h, w = a.num.shape
    keys: list[tuple[Val, bool]] = []
    by_col = None
    for i in range(1, len(args), 2):
        k = args[i]
        if k is None:
            return _err(VALUE, ctx)
        order = _orders(_arg(args, i + 1), 1)
        if isinstance(order, CellError):
            return _err(order, ctx)
        kh, kw = k.num.shape[1:]
        col = kw == 1 and kh == h and (kh > 1 or h == 1)
        row = kh == 1 and kw == w and (kw > 1 or w == 1)
        this = False if col else True if row else None
        if this is None or (by_col is not None and this != by_col):
            return _err(VALUE, ctx)
        by_col = this
        keys.append((k, order[0]))
    return _sorted(a, keys, bool(by_col), ctx)


def _truth(include: Val, ctx: Context) -> np.ndarray | CellError:
    """FILTER's include as booleans (F, n): an error in it is the result; text is #VALUE!."""
    objs = to_objects(include)
    f = objs.shape[0]
    flat = objs.reshape(f, -1)
    out = np.zeros(flat.shape, bool)
    for idx, x in np.ndenumerate(flat):
        if isinstance(x, CellError):
            return x
        if isinstance(x, str):
            return VALUE
        out[idx] = bool(x) if x is not None else False
    return out


@excel("FILTER", "Lookup & Reference", min_args=2, max_args=3, args="AAA")
def filter_(args: list[Val | None], ctx: Context) -> Val:
    """FILTER(array, include, [if_empty]): the rows (include a column as tall as the array) or
    columns (a row as wide) where include is true; none: if_empty, else #CALC!."""
    a, include = args[0], args[1]
    if a is None or include is None:
        return _err(VALUE, ctx)
    if (e := _first_error(a)) is not None:
        return _err(e, ctx)
    f, h, w = a.num.shape
    ih, iw = include.num.shape[1:]
    if iw == 1 and ih == h:
        rows = True
    elif ih == 1 and iw == w:
        rows = False
    else:
        return _err(VALUE, ctx)
    truth = _truth(include, ctx)
    if isinstance(truth, CellError):
        return _err(truth, ctx)
    _same_in_every_cell(truth)
    keep = np.flatnonzero(truth[0])
    if not len(keep):
        empty = _arg(args, 2)
        return empty if empty is not None else _err(CALC, ctx)
    return _select(a, keep, np.arange(w)) if rows else _select(a, np.arange(h), keep)


def _unique_key(x: object) -> tuple:
    if x is None:
        return ("blank",)
    if isinstance(x, CellError):
        return ("e", x.code)
    if isinstance(x, bool):
        return ("b", x)
    if isinstance(x, (int, float)):
        return ("n", float(x))
    return ("t", str(x).lower())


@excel("UNIQUE", "Lookup & Reference", min_args=1, max_args=3, args="AVV")
def unique(args: list[Val | None], ctx: Context) -> Val:
    """UNIQUE(array, [by_col], [exactly_once]): the distinct rows (columns) in the order they
    first appear, text ignoring case; with exactly_once those that appear once."""
    a = args[0] if args[0] is not None else scalar(None, ctx.device)
    if (e := _first_error(a)) is not None:
        return _err(e, ctx)
    by_col, once = _flag(_arg(args, 1), False), _flag(_arg(args, 2), False)
    for x in (by_col, once):
        if isinstance(x, CellError):
            return _err(x, ctx)
    objs = to_objects(a)
    if by_col:
        objs = objs.transpose(0, 2, 1)
    keeps = []
    for i in range(objs.shape[0]):
        keys = [tuple(_unique_key(x) for x in row) for row in objs[i]]
        if any(("blank",) in k for k in keys) and any(("n", 0.0) in k for k in keys):
            raise UnsupportedFormula("UNIQUE of a range holding both empty cells and zeros: whether Excel "
                                     "counts them as one is not established here")
        count: dict[tuple, int] = {}
        for k in keys:
            count[k] = count.get(k, 0) + 1
        seen: set[tuple] = set()
        keep = []
        for j, k in enumerate(keys):
            if k in seen or (once and count[k] > 1):
                continue
            seen.add(k)
            keep.append(j)
        keeps.append(keep)
    if any(k != keeps[0] for k in keeps[1:]):
        raise Ragged("UNIQUE keeps different entries from cell to cell")
    keep = np.array(keeps[0], np.int64)
    if not len(keep):
        return _err(CALC, ctx)
    f, h, w = a.num.shape
    return _select(a, np.arange(h), keep) if by_col else _select(a, keep, np.arange(w))


# -- LAMBDA values and the functions that apply them -------------------------------------------
# The parser turns a LAMBDA these functions receive into Call("LAMBDA", (Text(id), ..., body))
# and its parameters into Call("_XLPM", (Text(id),)): the interpreter hands these calls to
# LAZY unevaluated, with `ev` (its evaluate) to compute what they need when they need it.

Evaluate = Callable[[Node, Any], Val]
LAZY: dict[str, Callable[[Call, Any, Evaluate], Val]] = {}


def lazy(name: str) -> Callable:
    def register(fn: Callable[[Call, Any, Evaluate], Val]) -> Callable:
        LAZY[name] = fn
        return fn
    return register


@excel("LAMBDA", "Logical", args="A")
def lambda_value(args: list[Val | None], ctx: Context) -> Val:
    return _err(CALC, ctx)      # never reached: LAZY["LAMBDA"]


@excel("_XLPM", "Logical", min_args=1, max_args=1)
def lambda_parameter(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)     # never reached: LAZY["_XLPM"]


@lazy("LAMBDA")
def _lambda_as_value(node: Call, ctx: Any, ev: Evaluate) -> Val:
    return _err(CALC, ctx)      # a cell whose value is a LAMBDA: #CALC!, as in Excel


@lazy("_XLPM")
def _parameter(node: Call, ctx: Any, ev: Evaluate) -> Val:
    return ctx.env[node.args[0].value]


def _lambda(node: Node, n: int) -> tuple[list[str], Node] | None:
    """(parameter ids, body) of a run-time LAMBDA taking n arguments, else None."""
    if isinstance(node, Call) and node.name == "LAMBDA" and node.args \
            and all(isinstance(a, Text) for a in node.args[:-1]) and len(node.args) - 1 == n:
        return [a.value for a in node.args[:-1]], node.args[-1]
    return None


def _no_lambda(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """A LAMBDA function given no LAMBDA: an error among its other arguments, else #VALUE!."""
    for a in node.args:
        if isinstance(a, Missing) or (isinstance(a, Call) and a.name == "LAMBDA"):
            continue
        e = _first_error(ev(a, ctx))
        if e is not None:
            return _err(e, ctx)
    return _err(VALUE, ctx)


def _family_size(body: Node, ctx: Any, ev: Evaluate, *vals: Val) -> int:
    """How many family cells the values a body reads have: the batch is that many times k."""
    f = max([v.num.shape[0] for v in vals] or [1])
    where = getattr(ctx, "where", None)       # the family's cells (ROW(), OFFSET, ... read them)
    if where is not None:
        f = max(f, len(where.rows))
    for ref in set(refs(body)):
        f = max(f, ev(ref, ctx).num.shape[0])
    for v in getattr(ctx, "env", {}).values():
        f = max(f, v.num.shape[0])
    return f


def _batched(ctx: Any, ev: Evaluate, base: int, k: int, params: dict[str, Val]) -> Any:
    """A context for evaluating a body once for base*k items: item f*k + j belongs to family
    cell f; what the body reads from outside is repeated k times per cell."""
    sub = copy.copy(ctx)
    sub.memo = {}
    sub.resolve = lambda ref: _repeat(ev(ref, ctx), base, k)
    sub.env = {**{n: _repeat(v, base, k) for n, v in getattr(ctx, "env", {}).items()}, **params}
    where = getattr(ctx, "where", None)
    if where is not None and k > 1:     # each item is its family cell's, for ROW(), OFFSET, ...
        rows, cols = np.broadcast_to(where.rows, (base,)), np.broadcast_to(where.cols, (base,))
        sub.where = dataclasses.replace(where, rows=np.repeat(rows, k), cols=np.repeat(cols, k), memo=None)
    return sub


def _apply(body: Node, ctx: Any, ev: Evaluate, base: int, k: int, params: dict[str, Val]) -> Val:
    """The body for base*k items at once; where its arrays differ in size from item to item
    (FILTER in the body keeps different entries of each row: Ragged), item by item."""
    try:
        return ev(body, _batched(ctx, ev, base, k, params))
    except Ragged:
        pass
    outer = getattr(ctx, "env", {})
    nums, kinds, texts = [], [], []
    for b in range(base * k):
        sub = copy.copy(ctx)
        sub.memo = {}
        sub.resolve = lambda ref, f=b // k: cell_of(ev(ref, ctx), f)
        sub.env = {**{n: cell_of(v, b // k) for n, v in outer.items()}, **{n: cell_of(v, b) for n, v in params.items()}}
        _one_cell_where(sub, ctx, b // k)
        out = ev(body, sub)
        if out.num.shape[1:] != (1, 1):
            return _err(CALC, ctx)
        nums.append(out.num[:1])
        kinds.append(out.kinds()[:1])
        texts.append(_texts(out)[:1] if out.text is not None else np.empty((1, 1, 1), dtype=object))
    return _make(torch.cat(nums), np.concatenate(kinds), np.concatenate(texts))


def _one_each(v: Val, items: int, shape: tuple[int, int, int], ctx: Any) -> Val:
    """The body's values, one per item, laid out as `shape`; an array for an item is #CALC!."""
    if v.num.shape[1:] != (1, 1):
        return _err(CALC, ctx)
    return _reshape(_expand(v, items), shape)


@excel("BYROW", "Logical", min_args=2, max_args=2, args="A")
def byrow(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)     # reached only without a LAMBDA: LAZY["BYROW"] otherwise


@excel("BYCOL", "Logical", min_args=2, max_args=2, args="A")
def bycol(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)


@excel("MAKEARRAY", "Logical", min_args=3, max_args=3, args="VVA")
def makearray(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)


@excel("REDUCE", "Logical", min_args=3, max_args=3, args="A")
def reduce_(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)


@excel("SCAN", "Logical", min_args=3, max_args=3, args="A")
def scan(args: list[Val | None], ctx: Context) -> Val:
    return _err(VALUE, ctx)


def _by(node: Call, ctx: Any, ev: Evaluate, columns: bool) -> Val:
    lam = _lambda(node.args[-1], 1) if len(node.args) == 2 else None
    if lam is None:
        return _no_lambda(node, ctx, ev)
    (pid,), body = lam
    a = ev(node.args[0], ctx)
    f = _family_size(body, ctx, ev, a)
    a = _expand(a, f)
    _, h, w = a.num.shape
    k = w if columns else h
    part = _reshape(a, (f * w, h, 1), transpose=True) if columns else _reshape(a, (f * h, 1, w))
    out = _apply(body, ctx, ev, f, k, {pid: part})
    return _one_each(out, f * k, (f, 1, w) if columns else (f, h, 1), ctx)


@lazy("BYROW")
def _byrow(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """BYROW(array, LAMBDA(row, ...)): the body once over all rows, each row one item, so an
    aggregate in the body is a row-wise reduction; a body giving an array is #CALC!."""
    return _by(node, ctx, ev, False)


@lazy("BYCOL")
def _bycol(node: Call, ctx: Any, ev: Evaluate) -> Val:
    return _by(node, ctx, ev, True)


@lazy("MAP")
def _map(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """MAP(array1, ..., LAMBDA(x1, ..., body)) over a body that aggregates (one that works entry
    by entry was inlined by the parser: MAP(body), an identity): each entry one item."""
    lam = _lambda(node.args[-1], len(node.args) - 1) if len(node.args) > 1 else None
    if lam is None:
        if len(node.args) == 1:
            return ev(node.args[0], ctx)
        return _no_lambda(node, ctx, ev)
    ids, body = lam
    arrays = [ev(a, ctx) for a in node.args[:-1]]
    h = max(a.num.shape[1] for a in arrays)
    w = max(a.num.shape[2] for a in arrays)
    f = _family_size(body, ctx, ev, *arrays)
    items = []
    for a in arrays:
        ah, aw = a.num.shape[1:]
        a = _select(_expand(a, f), np.arange(h) if ah == h else (np.zeros(h, np.int64) if ah == 1 else _padded(ah, h)),
                    np.arange(w) if aw == w else (np.zeros(w, np.int64) if aw == 1 else _padded(aw, w)))
        items.append(_reshape(a, (f * h * w, 1, 1)))
    out = _apply(body, ctx, ev, f, h * w, dict(zip(ids, items)))
    return _one_each(out, f * h * w, (f, h, w), ctx)


@lazy("MAKEARRAY")
def _makearray(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """MAKEARRAY(rows, cols, LAMBDA(r, c, ...)): the body once over all rows×cols items."""
    lam = _lambda(node.args[-1], 2) if len(node.args) == 3 else None
    if lam is None:
        return _no_lambda(node, ctx, ev)
    (rid, cid), body = lam
    size = []
    for a in node.args[:2]:
        n = _int(ev(a, ctx) if not isinstance(a, Missing) else None)
        if isinstance(n, CellError):
            return _err(n, ctx)
        if n is None or n < 1:
            return _err(VALUE, ctx)
        size.append(n)
    rows, cols = size
    f = _family_size(body, ctx, ev)
    k = rows * cols
    pos = torch.arange(k, device=ctx.device)
    r = (pos // cols + 1).to(torch.float64).repeat(f).reshape(f * k, 1, 1)
    c = (pos % cols + 1).to(torch.float64).repeat(f).reshape(f * k, 1, 1)
    out = _apply(body, ctx, ev, f, k, {rid: Val(r, NUM, exact=True), cid: Val(c, NUM, exact=True)})
    return _one_each(out, f * k, (f, rows, cols), ctx)


def _fold(node: Call, ctx: Any, ev: Evaluate, keep: bool) -> Val:
    lam = _lambda(node.args[-1], 2) if len(node.args) == 3 else None
    if lam is None:
        return _no_lambda(node, ctx, ev)
    (acc_id, x_id), body = lam
    acc = scalar(None, ctx.device) if isinstance(node.args[0], Missing) else ev(node.args[0], ctx)
    a = ev(node.args[1], ctx)
    _, h, w = a.num.shape
    sub = copy.copy(ctx)          # no batching: the loop runs once per entry, row by row
    outer = dict(getattr(ctx, "env", {}))
    steps = []
    for i in range(h):
        for j in range(w):
            sub.env = {**outer, acc_id: acc, x_id: _select(a, np.arange(i, i + 1), np.arange(j, j + 1))}
            acc = ev(body, sub)
            if keep:
                if acc.num.shape[1:] != (1, 1):
                    return _err(CALC, ctx)
                steps.append(acc)
    if not keep:
        return acc
    f = max(s.num.shape[0] for s in steps)
    return _reshape(_cat([_expand(s, f) for s in steps], 1), (f, h, w))


@lazy("REDUCE")
def _reduce(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """REDUCE(initial, array, LAMBDA(acc, x, ...)): the body applied to each entry in turn
    (row by row), unrolled; the accumulator may be an array."""
    return _fold(node, ctx, ev, False)


@lazy("SCAN")
def _scan(node: Call, ctx: Any, ev: Evaluate) -> Val:
    """SCAN(initial, array, LAMBDA(acc, x, ...)): REDUCE's accumulator after each entry, in
    the array's shape."""
    return _fold(node, ctx, ev, True)


__all__ = ["LAZY", "Ragged", "CALC", "cell_by_cell", "cell_of"]
