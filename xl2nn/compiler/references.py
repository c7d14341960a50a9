"""Computing references: where OFFSET, INDIRECT, the ':' operator, and INDEX, CHOOSE and IF
returning a reference land; ROW, COLUMN, ROWS and COLUMNS of them.

A reference expression is computed in two steps. Its position arguments are computed as
values (any formula: OFFSET($C$3:$G$3,L126,0), INDIRECT("B"&ROW())), giving per family cell
a block of cells, `Areas`; then the cells of those blocks are read through the caller's
`Where.read`: from the grids in a recalculation (after making sure they are computed,
grid.py), from the producers' outputs in a model (lower.py). So in a model a position that
does not depend on the parameters is a gather, and the gradient reaches the cells looked up;
one that does is read on the host, which a trace refuses (hostread.py), and the family is
interpreted: its exact value for any weights, no gradient through the position.

Excel's semantics and errors: OFFSET off the sheet, or of height or width 0, is #REF!;
INDIRECT of text that is no reference is #REF!; an error in a position is that error. Where
Excel and LibreOffice disagree and no document settles it (a negative height, a range
between two sheets), the formula is refused (UnsupportedFormula): its cells keep their cached
values and are listed, never computed to a guess.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

from ..cells import MAX_COL, MAX_ROW, Area, CellError, col_number
from ..errors import FormulaError, UnsupportedFormula
from ..formula.ast import Call, ErrorLit, Missing, Node, Ref
from ..functions.values import (ERROR, NUM, REF, TEXT, VALUE, Val, errors_where, first_errors, from_objects, to_bool,
                                to_number, to_objects)
from ..functions.values import to_text as text_of
from ..ir.references import is_reference_call

if TYPE_CHECKING:
    from ..reader.workbook import Workbook
    from .grid import Grids

Evaluate = Callable[[Node], Val]


class RaggedReference(Exception):
    """The cells of one family land on blocks of different sizes (SUM(A$1:INDEX(A$1:A$9,n))
    with n varying): one tensor cannot hold them. `keys` gives each cell its group, cells of
    a group landing on blocks of one size; the caller computes the groups one by one."""

    def __init__(self, keys: np.ndarray) -> None:
        super().__init__("references of different sizes")
        self.keys = keys


@dataclass
class Areas:
    """Per family cell (axis 0: F, or 1 when every cell has the same) and per entry of an array
    of references (axes 1, 2: an OFFSET with an array of row offsets), a block of cells."""

    sheet: np.ndarray                 # object: sheet names
    r1: np.ndarray                    # int64: inclusive bounds
    c1: np.ndarray
    r2: np.ndarray
    c2: np.ndarray
    err: np.ndarray | None = None     # object: the CellError of an entry that is an error, else None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.r1.shape

    def ok(self) -> np.ndarray:
        return np.ones(self.shape, bool) if self.err is None else _unset(self.err)

    def heights(self) -> np.ndarray:
        return self.r2 - self.r1 + 1

    def widths(self) -> np.ndarray:
        return self.c2 - self.c1 + 1

    def broadcast(self, shape: tuple[int, ...]) -> Areas:
        def b(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else np.broadcast_to(x, shape)
        return Areas(b(self.sheet), b(self.r1), b(self.c1), b(self.r2), b(self.c2), b(self.err))

    def take(self, idx: np.ndarray) -> Areas:
        """The cells `idx` of the family (axis 0), where the areas differ from cell to cell."""
        if self.shape[0] == 1:
            return self

        def t(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[idx]
        return Areas(t(self.sheet), t(self.r1), t(self.c1), t(self.r2), t(self.c2), t(self.err))

    def blocks(self) -> list[Area]:
        """Every block, once (error entries left out)."""
        ok = self.ok()
        keys = zip(self.sheet[ok].tolist(), self.r1[ok].tolist(), self.c1[ok].tolist(),
                   self.r2[ok].tolist(), self.c2[ok].tolist())
        return [Area(*k) for k in dict.fromkeys(keys)]


def _unset(err: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda e: e is None, otypes=[bool])(err) if err.size else np.ones(err.shape, bool)


@dataclass
class Where:
    """What computing a reference needs to know about the family it is in."""

    sheet: str
    rows: np.ndarray                  # (F,) the family's cells (an array formula: its anchor)
    cols: np.ndarray
    read: Callable[[Areas], Val]      # the cells of blocks, as a reference reads them
    texts: ReferenceTexts             # INDIRECT's text -> a block
    array: Area | None = None         # an array formula's range (ROW() is its rows)
    # Where positions computed from constants only are kept between runs (a model's forward):
    # id of the call -> its Areas.
    memo: dict[int, Areas] | None = None


# -- the interpreter's entry points --------------------------------------------------------

def is_special(node: Call) -> bool:
    """Calls the interpreter computes here rather than through the function table."""
    if node.name in ("OFFSET", "INDIRECT", "RANGE", "ROW", "COLUMN"):
        return True
    return node.name in ("ROWS", "COLUMNS", "SINGLE") and len(node.args) == 1 and is_reference_call(node.args[0])


def special_value(node: Call, where: Where, value: Evaluate) -> Val:
    """The value of an `is_special` call in the family `where` describes."""
    name = node.name
    if name in ("ROW", "COLUMN"):
        return _row_or_column(node, where, value, name == "ROW")
    if name in ("ROWS", "COLUMNS"):
        areas = areas_of(node.args[0], where, value)
        if areas.shape[1:] != (1, 1):
            raise UnsupportedFormula(f"{name} of an array of references")
        size = areas.heights() if name == "ROWS" else areas.widths()
        return _numbers_val(size.astype(np.float64), areas.err)
    areas = where.memo.get(id(node)) if where.memo is not None else None
    if areas is None:
        consulted: list[Val] = []

        def tracked(n: Node) -> Val:
            v = value(n)
            consulted.append(v)
            return _constant(v)
        areas = areas_of(node.args[0] if name == "SINGLE" else node, where, tracked)
        if name == "SINGLE":
            areas = intersect(areas, where)
        if where.memo is not None and all(v.exact for v in consulted):    # the same every run
            where.memo[id(node)] = areas
    got = where.read(areas)
    if areas.shape[1:] != (1, 1):       # an array of references: their values, not a reference
        got.is_ref = False
    return got


def _constant(v: Val) -> Val:
    """A constant's entries (a literal, constant cells: the same for every weight) taken out of
    any trace: read inside one, each read would walk the trace's graph (hostread.py)."""
    if not v.exact:
        return v
    with disable_proxy_modes_tracing():
        num = v.num.detach().cpu().numpy().copy()
    return Val(torch.from_numpy(num), v.kind, v.text, v.is_ref, v.blank_is_value, True)


def intersect(areas: Areas, where: Where) -> Areas:
    """Implicit intersection: a block read where one value belongs, in an ordinary formula, is
    its cell in the formula's row (a column) or column (a row), #VALUE! where there is none."""
    if areas.shape[1:] != (1, 1):
        return areas
    shape = (max(areas.shape[0], len(where.rows)),) + areas.shape[1:]
    a = areas.broadcast(shape)
    row = np.broadcast_to(where.rows.reshape(-1, 1, 1), shape)
    col = np.broadcast_to(where.cols.reshape(-1, 1, 1), shape)
    one_row, one_col = a.r1 == a.r2, a.c1 == a.c2
    in_rows, in_cols = (a.r1 <= row) & (row <= a.r2), (a.c1 <= col) & (col <= a.c2)
    r = np.where(one_row, a.r1, row)
    c = np.where(one_col, a.c1, col)
    ok = np.where(one_row & one_col, True, np.where(one_row, in_cols, np.where(one_col, in_rows, in_rows & in_cols)))
    err = first_errors(shape, a.err, errors_where(~ok, VALUE))
    return Areas(a.sheet, np.where(ok, r, a.r1), np.where(ok, c, a.c1), np.where(ok, r, a.r1),
                 np.where(ok, c, a.c1), err)


# -- where a reference expression lands ------------------------------------------------------

def areas_of(node: Node, where: Where, value: Evaluate) -> Areas:
    """The blocks `node`, computed as a reference, lands on in each family cell."""
    if isinstance(node, Ref):
        rows, cols = (where.rows[:1], where.cols[:1]) if _absolute(node) else (where.rows, where.cols)
        top, left, bottom, right = node.bounds(rows, cols)
        shape = (len(rows), 1, 1)
        sheet = np.full(shape, node.sheet, dtype=object)
        return Areas(sheet, *(np.broadcast_to(np.asarray(x, np.int64).reshape(-1, 1, 1), shape)
                              for x in (top, left, bottom, right)))
    if isinstance(node, Call):
        handler = _HANDLERS.get(node.name)
        if handler is not None:
            return handler(node, where, value)
    if isinstance(node, ErrorLit):
        return _error_areas(CellError(node.code), (1, 1, 1))
    if isinstance(node, Missing):
        return _error_areas(VALUE, (1, 1, 1))
    v = value(node)               # not a reference: its own error, else #VALUE!
    codes = _codes(v)
    return _error_areas(VALUE, tuple(v.num.shape), codes)


def _absolute(ref: Ref) -> bool:
    return ref.r1_abs and ref.r2_abs and ref.c1_abs and ref.c2_abs


def _error_areas(code: CellError, shape: tuple[int, ...], codes: np.ndarray | None = None) -> Areas:
    zero = np.zeros(shape, np.int64)
    err = np.full(shape, code, dtype=object)
    if codes is not None:
        err = first_errors(shape, codes, err)
    return Areas(np.full(shape, "", dtype=object), zero, zero, zero, zero, err)


def _codes(v: Val) -> np.ndarray | None:
    if not v.has(ERROR):
        return None
    kinds = v.kinds()
    text = np.broadcast_to(v.text, kinds.shape)
    out = np.full(kinds.shape, None, dtype=object)
    hit = kinds == ERROR
    out[hit] = [CellError(t) for t in text[hit]]
    return out


def _numbers(v: Val) -> tuple[np.ndarray, np.ndarray | None]:
    """A position argument's entries as numbers (text read as VALUE does), and their errors.
    On the host: a parameter-dependent position raises HostRead while tracing."""
    if v.numeric:
        return v.num.detach().cpu().numpy().astype(np.float64), None
    objs = to_objects(v)
    num = np.zeros(objs.shape)
    err = np.full(objs.shape, None, dtype=object)
    for idx, x in np.ndenumerate(objs):
        n = to_number(x)
        if isinstance(n, CellError):
            err[idx] = n
        else:
            num[idx] = n
    return num, (err if not _unset(err).all() else None)


def _whole(x: np.ndarray) -> np.ndarray:
    """Truncated toward zero, as Excel reads a position (huge values stay out of range)."""
    return np.trunc(np.nan_to_num(np.clip(x, -2.0 ** 40, 2.0 ** 40))).astype(np.int64)


def _argument(node: Call, i: int) -> Node | None:
    """Argument i, or None where the call stops before it."""
    return node.args[i] if i < len(node.args) else None


def _offset(node: Call, where: Where, value: Evaluate) -> Areas:
    base = areas_of(node.args[0], where, value)
    nums, errs = [], []
    for i in (1, 2):
        arg = _argument(node, i)
        if arg is None or isinstance(arg, Missing):
            nums.append(np.zeros((1, 1, 1)))
            errs.append(None)
            continue
        n, e = _numbers(value(arg))
        nums.append(n)
        errs.append(e)
    for i, extent in ((3, base.heights()), (4, base.widths())):
        arg = _argument(node, i)
        if arg is None or (isinstance(arg, Missing) and i < len(node.args) - 1):
            nums.append(extent.astype(np.float64))      # omitted: the base's size
            errs.append(None)
            continue
        if isinstance(arg, Missing):    # a last size written empty: LibreOffice reads 0, Excel?
            raise UnsupportedFormula("OFFSET with its last size argument left empty")
        n, e = _numbers(value(arg))
        nums.append(n)
        errs.append(e)
    shape = np.broadcast_shapes(base.shape, *(n.shape for n in nums))
    base = base.broadcast(shape)
    rows, cols, height, width = (np.broadcast_to(_whole(n), shape) for n in nums)
    err = first_errors(shape, base.err, *errs)
    fine = np.ones(shape, bool) if err is None else _unset(err)
    if ((fine & ((height < 0) | (width < 0)))).any():
        # Excel extends the block up or left (undocumented), LibreOffice gives an error.
        raise UnsupportedFormula("OFFSET with a negative height or width")
    r1, c1 = base.r1 + rows, base.c1 + cols
    r2, c2 = r1 + height - 1, c1 + width - 1
    off = (height == 0) | (width == 0) | (r1 < 1) | (c1 < 1) | (r2 > MAX_ROW) | (c2 > MAX_COL)
    return _bounded(base.sheet, r1, c1, r2, c2, first_errors(shape, err, errors_where(off, REF)))


def _bounded(sheet, r1, c1, r2, c2, err) -> Areas:
    """Areas whose error entries get harmless bounds (A1), so no reader trips on them."""
    if err is not None:
        bad = ~_unset(err)
        r1, c1, r2, c2 = (np.where(bad, 1, x) for x in (r1, c1, r2, c2))
    return Areas(np.asarray(sheet, dtype=object), *(np.asarray(x, np.int64) for x in (r1, c1, r2, c2)), err)


def _indirect(node: Call, where: Where, value: Evaluate) -> Areas:
    texts = to_objects(value(node.args[0]))
    a1_arg = _argument(node, 1)
    if a1_arg is None:
        a1 = np.ones((1, 1, 1), dtype=object)
    elif isinstance(a1_arg, Missing):               # written but empty: FALSE, R1C1
        a1 = np.zeros((1, 1, 1), dtype=object)
    else:
        a1 = to_objects(value(a1_arg))
    shape = np.broadcast_shapes(texts.shape, a1.shape)
    if _relative_possible(a1):          # R1C1 text may count from each formula cell (R[1]C)
        shape = np.broadcast_shapes(shape, (len(where.rows), 1, 1))
    texts, a1 = np.broadcast_to(texts, shape), np.broadcast_to(a1, shape)
    own = slice(None) if shape[0] == len(where.rows) else slice(0, 1)
    rows = np.broadcast_to(where.rows[own].reshape(-1, 1, 1), shape)
    cols = np.broadcast_to(where.cols[own].reshape(-1, 1, 1), shape)
    sheet = np.full(shape, "", dtype=object)
    bounds = np.ones((4,) + shape, np.int64)
    err = np.full(shape, None, dtype=object)
    for idx in np.ndindex(*shape):
        t, flag = text_of(texts[idx]), to_bool(a1[idx])
        if isinstance(t, CellError) or isinstance(flag, CellError):
            err[idx] = t if isinstance(t, CellError) else flag
            continue
        got = where.texts.area(t, bool(flag), where.sheet, int(rows[idx]), int(cols[idx]))
        if isinstance(got, CellError):
            err[idx] = got
            continue
        sheet[idx] = got.sheet
        bounds[:, idx[0], idx[1], idx[2]] = (got.r1, got.c1, got.r2, got.c2)
    return Areas(sheet, *bounds, err if not _unset(err).all() else None)


def _relative_possible(a1: np.ndarray) -> bool:
    """R1C1 text may count from the formula's cell (R[1]C): then every cell has its own."""
    return any(to_bool(x) is False for x in a1.reshape(-1))


def _range(node: Call, where: Where, value: Evaluate) -> Areas:
    a, b = (areas_of(x, where, value) for x in node.args)
    shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = a.broadcast(shape), b.broadcast(shape)
    err = first_errors(shape, a.err, b.err)
    fine = np.ones(shape, bool) if err is None else _unset(err)
    if (fine & (a.sheet != b.sheet)).any():
        # Excel: #VALUE!? LibreOffice: a 3-D range through the sheets between.
        raise UnsupportedFormula("the ':' operator between references on two sheets")
    return _bounded(a.sheet, np.minimum(a.r1, b.r1), np.minimum(a.c1, b.c1), np.maximum(a.r2, b.r2),
                    np.maximum(a.c2, b.c2), err)


def _index(node: Call, where: Where, value: Evaluate) -> Areas:
    """INDEX(reference, row, [column]) where a reference is wanted: one cell, or a whole row or
    column of it (a 0)."""
    if len(node.args) > 3:
        area = _argument(node, 3)
        n, e = _numbers(value(area)) if area is not None and not isinstance(area, Missing) else (np.ones(1), None)
        if e is not None or (_whole(n) != 1).any():
            raise UnsupportedFormula("INDEX over several areas")
    ref = areas_of(node.args[0], where, value)
    parts = []
    for i in (1, 2):
        arg = _argument(node, i)
        parts.append((np.zeros((1, 1, 1)), None) if arg is None or isinstance(arg, Missing) else _numbers(value(arg)))
    (rn, re_), (cn, ce) = parts
    shape = np.broadcast_shapes(ref.shape, rn.shape, cn.shape)
    ref = ref.broadcast(shape)
    r, c = np.broadcast_to(_whole(rn), shape), np.broadcast_to(_whole(cn), shape)
    h, w = ref.heights(), ref.widths()
    if len(node.args) == 2:          # INDEX(one row, n) counts along the row
        r, c = np.where(h == 1, np.where(r != 0, 1, 0), r), np.where(h == 1, r, c)
    err = first_errors(shape, ref.err, re_, ce, errors_where((r < 0) | (c < 0), VALUE), errors_where((r > h) | (c > w), REF))
    r1 = np.where(r == 0, ref.r1, ref.r1 + r - 1)
    r2 = np.where(r == 0, ref.r2, ref.r1 + r - 1)
    c1 = np.where(c == 0, ref.c1, ref.c1 + c - 1)
    c2 = np.where(c == 0, ref.c2, ref.c1 + c - 1)
    return _bounded(ref.sheet, r1, c1, r2, c2, err)


def _pick(index: np.ndarray, err: np.ndarray | None, options: list[Areas]) -> Areas:
    """Per entry, option index[...] (0-based), #VALUE! where there is none."""
    shape = np.broadcast_shapes(index.shape, *(o.shape for o in options))
    index = np.broadcast_to(index, shape)
    opts = [o.broadcast(shape) for o in options]
    out = {k: np.full(shape, "" if k == "sheet" else 1, dtype=object if k == "sheet" else np.int64)
           for k in ("sheet", "r1", "c1", "r2", "c2")}
    picked_err = np.full(shape, None, dtype=object)
    for j, o in enumerate(opts):
        sel = index == j
        for k in out:
            out[k][sel] = getattr(o, k)[sel]
        if o.err is not None:
            picked_err[sel] = o.err[sel]
    bad = (index < 0) | (index >= len(options))
    full = first_errors(shape, err, errors_where(bad, VALUE), picked_err)
    return _bounded(out["sheet"], out["r1"], out["c1"], out["r2"], out["c2"], full)


def _choose(node: Call, where: Where, value: Evaluate) -> Areas:
    n, e = _numbers(value(node.args[0]))
    options = [areas_of(a, where, value) for a in node.args[1:]]
    return _pick(_whole(n) - 1, e, options)


def _if(node: Call, where: Where, value: Evaluate) -> Areas:
    objs = to_objects(value(node.args[0]))
    truth = np.zeros(objs.shape, np.int64)
    err = np.full(objs.shape, None, dtype=object)
    for idx, x in np.ndenumerate(objs):
        b = to_bool(x)
        if isinstance(b, CellError):
            err[idx] = b
        else:
            truth[idx] = 0 if b else 1
    branches = [areas_of(a, where, value) if not isinstance(a, Missing) else _error_areas(VALUE, (1, 1, 1))
                for a in node.args[1:3]]
    if len(branches) < 2:               # IF(c, ref) where c is FALSE: FALSE, not a reference
        branches.append(_error_areas(VALUE, (1, 1, 1)))
    return _pick(truth, err if not _unset(err).all() else None, branches)


_HANDLERS: dict[str, Callable[[Call, Where, Evaluate], Areas]] = {
    "OFFSET": _offset, "INDIRECT": _indirect, "RANGE": _range, "INDEX": _index, "CHOOSE": _choose, "IF": _if,
}


# -- ROW and COLUMN ---------------------------------------------------------------------------

def _row_or_column(node: Call, where: Where, value: Evaluate, row: bool) -> Val:
    """ROW() / COLUMN(): the formula's own (an array formula: the rows or columns of its range,
    as an array); ROW(ref): the rows of the reference, as a column (COLUMN: a row)."""
    arg = _argument(node, 0)
    if arg is None or isinstance(arg, Missing):
        if where.array is not None:
            a = where.array
            line = np.arange(a.r1, a.r2 + 1).reshape(1, -1, 1) if row else np.arange(a.c1, a.c2 + 1).reshape(1, 1, -1)
            return _numbers_val(line.astype(np.float64), None)
        own = where.rows if row else where.cols
        return _numbers_val(own.astype(np.float64).reshape(-1, 1, 1), None)
    areas = areas_of(arg, where, value)
    if areas.shape[1:] != (1, 1):        # ROW(OFFSET(A1,{1;2},0)): one number per reference
        first = areas.r1 if row else areas.c1
        return _numbers_val(first.astype(np.float64), areas.err)
    extent = areas.heights() if row else areas.widths()
    ok = areas.ok().reshape(-1)
    n = extent.reshape(-1)[ok]
    if len(n) and (n != n[0]).any():
        raise RaggedReference(_group_keys(extent.reshape(-1), ok))
    size = int(n[0]) if len(n) else 1
    start = (areas.r1 if row else areas.c1).reshape(-1, 1, 1)
    steps = np.arange(size).reshape((1, size, 1) if row else (1, 1, size))
    return _numbers_val((start + steps).astype(np.float64), None if areas.err is None else areas.err.reshape(-1, 1, 1))


def _numbers_val(num: np.ndarray, err: np.ndarray | None) -> Val:
    v = Val(torch.from_numpy(np.ascontiguousarray(num, dtype=np.float64)), NUM, exact=True)
    if err is None or _unset(err).all():
        return v
    objs = np.array(np.broadcast_to(num, np.broadcast_shapes(num.shape, err.shape)), dtype=object)
    e = np.broadcast_to(err, objs.shape)
    bad = ~_unset(e)
    objs[bad] = e[bad]
    return from_objects(objs)


def _group_keys(sizes: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """A group per distinct size (errors join the first group)."""
    keys = np.unique(sizes[ok], return_inverse=True)[1] if ok.any() else np.zeros(0, np.int64)
    out = np.zeros(len(sizes), np.int64)
    out[ok] = keys
    return out


# -- reading the cells of blocks --------------------------------------------------------------

def block_indices(areas: Areas, rows_limit: dict[str, int], cols_limit: dict[str, int]
                  ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per sheet, (sheet, which family cells, R, C): the row and column of every cell the blocks
    read, shaped (cells, h, w) for blocks of one size, or (cells, a, b) for an array of one-cell
    references. Whole columns and rows stop at the sheet's used range (past it: empty cells).
    Raises RaggedReference where blocks differ in size."""
    f = areas.shape[0]
    entries = areas.shape[1] * areas.shape[2]
    ok = areas.ok()
    if entries > 1:
        if ((areas.heights() != 1) | (areas.widths() != 1))[ok].any():
            raise UnsupportedFormula("an array of references to blocks of more than one cell")
        r, c = areas.r1, areas.c1
        h = w = None
    else:
        heights = np.array([_clipped(s, a, b, MAX_ROW, rows_limit) for s, a, b in
                            zip(areas.sheet.reshape(-1), areas.r1.reshape(-1), areas.r2.reshape(-1))], np.int64)
        widths = np.array([_clipped(s, a, b, MAX_COL, cols_limit) for s, a, b in
                           zip(areas.sheet.reshape(-1), areas.c1.reshape(-1), areas.c2.reshape(-1))], np.int64)
        good = ok.reshape(-1)
        key = heights * (MAX_COL + 1) + widths
        if good.any() and (key[good] != key[good][0]).any():
            raise RaggedReference(_group_keys(key, good))
        h = int(heights[good][0]) if good.any() else 1
        w = int(widths[good][0]) if good.any() else 1
        r = areas.r1.reshape(-1, 1, 1) + np.arange(h).reshape(1, -1, 1)
        c = areas.c1.reshape(-1, 1, 1) + np.arange(w).reshape(1, 1, -1)
        r, c = np.broadcast_to(r, (f, h, w)), np.broadcast_to(c, (f, h, w))
    if entries == 1:
        sheets = areas.sheet[:, 0, 0]
        good_cells = ok.reshape(f)
    else:       # one sheet per family cell: that of its references that are no error
        named = np.where(ok, areas.sheet, None).reshape(f, -1)
        per_cell = [set(row.tolist()) - {None} for row in named]
        if any(len(p) > 1 for p in per_cell):
            raise UnsupportedFormula("an array of references to several sheets")
        sheets = np.array([next(iter(p)) if p else None for p in per_cell], dtype=object)
        good_cells = np.array([bool(p) for p in per_cell])
    out = []
    for s in dict.fromkeys(sheets[good_cells].tolist()) if good_cells.any() else [None]:
        which = np.flatnonzero((sheets == s) & good_cells) if s is not None else np.arange(0)
        out.append((s, which, np.asarray(r)[which], np.asarray(c)[which]))
    return out


def _clipped(sheet: str, first: int, last: int, end: int, limit: dict[str, int]) -> int:
    """A block's extent, one reaching the sheet's end (a whole column) cut at its used range."""
    n = last - first + 1
    if last == end and sheet in limit:
        n = max(1, min(n, limit[sheet] - first))
    return n


def read_grid(grids: Grids, areas: Areas, device: torch.device) -> Val:
    """The cells of `areas` from the grids (a recalculation), errors where a block is one."""
    rows_limit = {s: g.shape[0] for s, g in grids.num.items()}
    cols_limit = {s: g.shape[1] for s, g in grids.num.items()}
    parts = [(which, grids.read(sheet, r, c, device)) for sheet, which, r, c in
             block_indices(areas, rows_limit, cols_limit) if len(which)]
    return assemble(parts, areas, device)


def assemble(parts: list[tuple[np.ndarray, Val]], areas: Areas, device: torch.device) -> Val:
    """One value over the family from the values read per sheet (`which` cells each), with
    the error entries of `areas` set. Torch indexing: the gradient reaches every part."""
    f = areas.shape[0]
    if len(parts) == 1 and len(parts[0][0]) == f and areas.err is None:
        v = parts[0][1]
        return Val(v.num, v.kind, v.text, is_ref=True, exact=v.exact)
    if parts:
        shape = tuple(parts[0][1].num.shape[1:])
    else:
        shape = (1, 1) if areas.shape[1:] == (1, 1) else areas.shape[1:]
    order = np.concatenate([w for w, _ in parts]) if parts else np.zeros(0, np.int64)
    nums = [p.num.expand(len(w), *shape) for w, p in parts]
    filler = torch.full((1,) + shape, float("nan"), dtype=torch.float64, device=device)
    stacked = torch.cat(nums + [filler]) if nums else filler
    pos = np.full(f, len(order), np.int64)      # cells without a part read the filler
    pos[order] = np.arange(len(order))
    num = stacked[torch.as_tensor(pos, device=stacked.device)]
    kinds = np.full((f,) + shape, ERROR, np.int8)
    text = np.full((f,) + shape, "#REF!", dtype=object)
    for w, p in parts:
        kinds[w] = np.broadcast_to(p.kinds(), (len(w),) + shape)
        text[w] = np.broadcast_to(p.text, (len(w),) + shape) if p.text is not None else None
    if areas.err is not None:
        e = np.broadcast_to(areas.err, (f,) + areas.shape[1:])
        e = np.broadcast_to(e, (f,) + shape) if areas.shape[1:] != (1, 1) else np.broadcast_to(e[:, :1, :1], (f,) + shape)
        bad = ~_unset(np.asarray(e))
        kinds[bad] = ERROR
        text[bad] = [x.code for x in np.asarray(e)[bad]]
        num = torch.where(torch.as_tensor(bad, device=num.device), float("nan"), num)
    flat = kinds.reshape(-1)
    kind: int | np.ndarray = int(flat[0]) if flat.size and (flat == flat[0]).all() else kinds
    has_text = bool(((kinds == ERROR) | (kinds == TEXT)).any())
    return Val(num, kind, text if has_text else None, is_ref=True, exact=all(p.exact for _, p in parts))


def owners_of(areas: Areas, owner: Callable[[str, int, int, int, int], np.ndarray]) -> set[int]:
    """The producers (families) owning a cell of any block."""
    out: set[int] = set()
    for a in areas.blocks():
        out.update(int(x) for x in owner(a.sheet, a.r1, a.c1, a.r2, a.c2))
    return out


# -- INDIRECT's text --------------------------------------------------------------------------

_SHEETED = re.compile(r"^(?:'((?:[^']|'')+)'|([A-Za-z0-9_.\u00c0-\uffff]+))!(.+)$")   # a space needs quotes
_A1_CELL = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")
_A1_COL = re.compile(r"^\$?([A-Za-z]{1,3})$")
_A1_ROW = re.compile(r"^\$?(\d+)$")
_R1C1 = re.compile(r"^(?:R(\[-?\d+\]|\d+)?)?(?:C(\[-?\d+\]|\d+)?)?$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_\\][A-Za-z0-9_.\\?]*$")


@dataclass
class ReferenceTexts:
    """INDIRECT's text as a block of cells: A1 or R1C1 references, sheet-qualified (quoted or
    not), whole rows and columns, defined names; anything else is #REF!."""

    workbook: Workbook
    _cache: dict[tuple[str, bool, str], object] = field(default_factory=dict)
    _parser: object = None

    def area(self, text: str, a1: bool, home: str, row: int, col: int) -> Area | CellError:
        key = (text, a1, home)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = self._parse(text, a1, home)
        if isinstance(got, CellError):
            return got
        sheet, spec = got  # type: ignore[misc]
        r1, c1, r2, c2 = (v + (row if i % 2 == 0 else col) if rel else v
                          for i, (v, rel) in enumerate(spec))
        r1, r2 = min(r1, r2), max(r1, r2)
        c1, c2 = min(c1, c2), max(c1, c2)
        if r1 < 1 or c1 < 1 or r2 > MAX_ROW or c2 > MAX_COL:
            return REF
        return Area(sheet, r1, c1, r2, c2)

    def _parse(self, text: str, a1: bool, home: str) -> object:
        """(sheet, ((r1, relative), (c1, rel), (r2, rel), (c2, rel))) or #REF!."""
        if "[" in text and a1:
            raise UnsupportedFormula("INDIRECT of a structured reference")
        sheet, body = home, text
        m = _SHEETED.match(text)
        if m is None and "!" in text:
            return REF
        if m:
            name = m.group(1).replace("''", "'") if m.group(1) is not None else m.group(2)
            found = next((s.name for s in self.workbook.sheets.values() if s.name.lower() == name.lower()), None)
            if found is None:
                return REF
            sheet, body = found, m.group(3)
        spec = _a1_spec(body) if a1 else _r1c1_spec(body)
        if spec is not None:
            return sheet, spec
        if _NAME.match(body) and not _A1_CELL.match(body) and not _R1C1.match(body):
            return self._name(body, sheet, qualified=m is not None)     # no name looks like a cell
        return REF

    def _name(self, name: str, sheet: str, qualified: bool) -> object:
        from ..formula import FormulaParser
        if self._parser is None:
            self._parser = FormulaParser(self.workbook)
        text = (f"'{sheet}'!{name}" if qualified else name)
        try:
            node = self._parser.parse(text, sheet, 1, 1)  # type: ignore[attr-defined]
        except FormulaError:
            return REF
        if not isinstance(node, Ref):
            return REF
        a = node.area_at(1, 1)
        return a.sheet, ((a.r1, False), (a.c1, False), (a.r2, False), (a.c2, False))


def _a1_spec(body: str) -> tuple | None:
    first, sep, last = body.partition(":")
    if not sep:
        m = _A1_CELL.match(first)
        if not m:
            return None
        r, c = _checked_cell(m)
        return None if r is None else ((r, False), (c, False), (r, False), (c, False))
    ends = [_A1_CELL.match(first), _A1_CELL.match(last)]
    if all(ends):
        (r1, c1), (r2, c2) = (_checked_cell(e) for e in ends)  # type: ignore[arg-type]
        if r1 is None or r2 is None:
            return None
        return (r1, False), (c1, False), (r2, False), (c2, False)
    cols = [_A1_COL.match(first), _A1_COL.match(last)]
    if all(cols):
        c1, c2 = (col_number(x.group(1)) for x in cols)  # type: ignore[union-attr]
        if max(c1, c2) > MAX_COL:
            return None
        return (1, False), (c1, False), (MAX_ROW, False), (c2, False)
    rows = [_A1_ROW.match(first), _A1_ROW.match(last)]
    if all(rows):
        r1, r2 = (int(x.group(1)) for x in rows)  # type: ignore[union-attr]
        if min(r1, r2) < 1 or max(r1, r2) > MAX_ROW:
            return None
        return (r1, False), (1, False), (r2, False), (MAX_COL, False)
    return None


def _checked_cell(m: re.Match) -> tuple[int | None, int | None]:
    c, r = col_number(m.group(1)), int(m.group(2))
    if not (1 <= r <= MAX_ROW and 1 <= c <= MAX_COL):
        return None, None
    return r, c


def _r1c1_part(text: str) -> tuple[tuple[int, bool] | None, tuple[int, bool] | None, bool, bool] | None:
    """'R2C[-1]' -> ((2, abs), (-1, relative), has R, has C), or None if it is not R1C1."""
    m = _R1C1.match(text)
    if not m or not text:
        return None
    upper = text.upper()
    has_r, has_c = upper.startswith("R"), "C" in upper
    return _coordinate(m.group(1)), _coordinate(m.group(2)), has_r, has_c


def _coordinate(spec: str | None) -> tuple[int, bool]:
    if spec is None:
        return 0, True                      # R alone: the formula's own row
    if spec.startswith("["):
        return int(spec[1:-1]), True
    return int(spec), False


def _r1c1_spec(body: str) -> tuple | None:
    parts = [_r1c1_part(p) for p in body.split(":")]
    if len(parts) > 2 or any(p is None for p in parts):
        return None
    kinds = {(p[2], p[3]) for p in parts}   # type: ignore[index]
    if len(kinds) != 1:
        return None
    has_r, has_c = kinds.pop()
    first, last = parts[0], parts[-1]
    if any(not rel and v < 1 for p in parts for v, rel in (p[0], p[1]) if p is not None):  # type: ignore[misc]
        return None
    whole_rows = (1, False), (MAX_COL, False)
    whole_cols = (1, False), (MAX_ROW, False)
    if has_r and has_c:
        return first[0], first[1], last[0], last[1]       # type: ignore[index]
    if has_r:
        return first[0], whole_rows[0], last[0], whole_rows[1]      # type: ignore[index]
    return whole_cols[0], first[1], whole_cols[1], last[1]          # type: ignore[index]


__all__ = ["Areas", "RaggedReference", "ReferenceTexts", "Where", "areas_of", "assemble", "block_indices",
           "intersect", "is_special", "owners_of", "read_grid", "special_value"]
