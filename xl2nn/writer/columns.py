"""Many numbers written into a sheet part at once.

Training a 100,000-row sheet rewrites 600,000 cached values. Patching them cell by cell
costs seconds; here the reader's NumPy layout of the part (reader/scan.py) gives every
<v> span, and the new numbers are spliced in with one join. Cells that are not a plain
numeric <v> (a text result, a missing value, a new cell) are handed back for the general
patcher, which handles every form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cells import CellValue
from ..reader.scan import ValueSpans, locate, sheet_data

Pos = tuple[int, int]


@dataclass
class CellColumns:
    """One sheet's updates: numbers at (rows, cols) as arrays, and any other values by cell
    (those win where a cell is in both)."""

    rows: np.ndarray
    cols: np.ndarray
    numbers: np.ndarray
    other: dict[Pos, CellValue] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows) + len(self.other)

    def as_dict(self) -> dict[Pos, CellValue]:
        out: dict[Pos, CellValue] = dict(zip(zip(self.rows.tolist(), self.cols.tolist()), self.numbers.tolist()))
        out.update(self.other)
        return out


_BLOCK = 1 << 16


def cell_keys(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One integer per cell (columns stop at 16,384 < 2**15)."""
    return np.asarray(rows, np.int64) * (1 << 15) + np.asarray(cols, np.int64)


def splice_numbers(data: bytes, rows: np.ndarray, cols: np.ndarray, numbers: np.ndarray,
                   spans: ValueSpans | None = None) -> tuple[bytes, np.ndarray] | None:
    """`data` (a worksheet part) with the cached number of each cell (rows[i], cols[i]) set to
    numbers[i], and a mask of the cells it could not set that way; None when the part is not
    in the plain form (then nothing was done). `spans`: the part's layout, when the reader
    already found it (it must be of these very bytes)."""
    if spans is None:
        body = sheet_data(data)
        spans = locate(data, *body) if body is not None else None
        if spans is None:
            return None
    # cell keys, sorted, to find each update's cell
    key = cell_keys(spans.rows, spans.cols)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    if len(skey) > 1 and (skey[1:] == skey[:-1]).any():
        return None                                     # a cell written twice: leave it to the general path
    want = cell_keys(rows, cols)
    at = np.minimum(np.searchsorted(skey, want), len(skey) - 1)
    found = skey[at] == want
    cell = np.where(found, order[at], -1)
    v_of_cell = np.full(len(key), -1, np.int64)
    v_of_cell[spans.vci] = np.arange(len(spans.vci))
    v = np.where(found, v_of_cell[np.maximum(cell, 0)], -1)
    # a cell with a value element gets it replaced; a formula cell without one (openpyxl
    # writes none, or <v/>) gets one added before its '</c>', when its formula is its last child
    ok = found & np.isfinite(numbers)
    ok[ok] &= spans.kind[cell[ok]] == ord("n")
    a = np.frombuffer(data, np.uint8)
    bare = np.flatnonzero(ok & (v < 0))
    if len(bare):
        close = spans.close[cell[bare]]
        at = np.maximum(close, 4)
        ends_f = np.ones(len(bare), bool)
        for k, byte in enumerate(b"</f>"):
            ends_f &= np.take(a, at - 4 + k) == byte
        self_closed = (np.take(a, at - 2) == ord("/")) & (np.take(a, at - 1) == ord(">"))
        for i in np.flatnonzero(self_closed & ~ends_f).tolist():     # rare: is that last tag an <f .../>?
            self_closed[i] = data[data.rfind(b"<", 0, int(close[i])) + 1:][:2] == b"f "
        ok[bare] = (close > 0) & (ends_f | self_closed)
    take = np.flatnonzero(ok)
    if not len(take):
        return data, ~ok
    vt, ct = v[take], cell[take]
    has_v = vt >= 0
    vo, ve = spans.vo[np.maximum(vt, 0)], spans.ve[np.maximum(vt, 0)]
    # the element ends after its '</v>', or after the '/>' of an empty <v/> or <v />
    closed = np.ones(len(take), bool)
    for k, byte in enumerate(b"</v>"):
        closed &= np.take(a, np.minimum(ve + k, len(a) - 1)) == byte
    vend = np.where(closed, ve + 4, np.where(np.take(a, vo + 2) == ord("/"), vo + 4, vo + 5))
    starts = np.where(has_v, vo, spans.close[ct])
    ends = np.where(has_v, vend, spans.close[ct])
    by_place = np.argsort(starts, kind="stable")
    starts, ends, vals = starts[by_place], ends[by_place], numbers[take][by_place]
    if len(starts) > 1 and (np.diff(starts) == 0).any():
        return None                                     # one cell updated twice: the general path decides
    # In blocks of values, so that a million-row sheet never holds millions of small pieces
    # at once: repr is float()'s exact inverse, one join and one encode per block.
    blocks: list[bytes] = []
    done = 0
    for b in range(0, len(starts), _BLOCK):
        s, e, x = starts[b:b + _BLOCK].tolist(), ends[b:b + _BLOCK].tolist(), vals[b:b + _BLOCK].tolist()
        texts = ("<v>" + "</v>\n<v>".join(map(repr, x)) + "</v>").encode().split(b"\n")
        pieces: list[bytes] = [b""] * (2 * len(texts))
        pieces[1::2] = texts
        pieces[0::2] = [data[p:q] for p, q in zip([done, *e[:-1]], s)]
        blocks.append(b"".join(pieces))
        done = e[-1]
    blocks.append(data[done:])
    return b"".join(blocks), ~ok
