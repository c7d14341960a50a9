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
    ok = found & (v >= 0) & np.isfinite(numbers)
    ok[ok] &= spans.kind[cell[ok]] == ord("n")
    take = np.flatnonzero(ok)
    if not len(take):
        return data, ~ok
    vi = v[take]
    by_place = np.argsort(vi, kind="stable")
    vi, vals = vi[by_place], numbers[take][by_place]
    if len(vi) > 1 and (np.diff(vi) == 0).any():
        return None                                     # one cell updated twice: the general path decides
    starts = (spans.vo[vi] + 3).tolist()                # the text between <v> and </v>
    ends = spans.ve[vi].tolist()
    # repr is float()'s exact inverse; one join and one encode for all of them
    texts = "\n".join(map(repr, vals.tolist())).encode().split(b"\n")
    pieces: list[bytes] = [b""] * (2 * len(texts) + 1)
    pieces[1::2] = texts
    pieces[0::2] = [data[a:b] for a, b in zip([0, *ends], [*starts, len(data)])]
    return b"".join(pieces), ~ok
