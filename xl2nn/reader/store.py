"""A sheet's cells held column-wise in NumPy arrays, read through a dict-like view.

A 100,000-row sheet has well over a million cells; a Python object per cell costs
seconds and hundreds of MB. Numbers live in three parallel arrays (row, column, value),
and copied formulas as one template plus the arrays of cells that share it. Everything
else (text, booleans, errors, the odd hand edit) sits in a small dict. Point lookups go
through a dense index grid built on first use.
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

import numpy as np

from ..cells import Area, CellValue

Pos = tuple[int, int]


@dataclass(frozen=True)
class Formula:
    """A formula cell's text as written at `anchor`.

    Shared-formula children and the non-anchor cells of an array range point at
    their master's text and position: the cell's own formula is that text moved
    from `anchor` to the cell.
    """

    text: str
    anchor: tuple[int, int]
    array: Area | None = None   # set for every cell of a CSE/dynamic array range


class _Columns:
    """Append-only (row, col, payload) arrays, built in chunks, with a lazy position index."""

    def __init__(self, dtype: type) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._dtype = dtype
        self._rows = np.empty(0, np.int64)
        self._cols = np.empty(0, np.int64)
        self._data = np.empty(0, dtype)
        self._alive = np.empty(0, bool)
        # (row, col) -> position in the arrays: a dense grid (-1: none), or a dict when the
        # cells are too spread out for one
        self._index: np.ndarray | dict[Pos, int] | None = None

    def extend(self, rows: np.ndarray, cols: np.ndarray, data: np.ndarray) -> None:
        if len(rows):
            self._chunks.append((np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(data, self._dtype)))
            self._index = None

    def _flush(self) -> None:
        if self._chunks:
            rows, cols, data = zip(*self._chunks)
            self._chunks = []
            self._rows = np.concatenate([self._rows, *rows])
            self._cols = np.concatenate([self._cols, *cols])
            self._data = np.concatenate([self._data, *data])
            self._alive = np.concatenate([self._alive, np.ones(sum(len(r) for r in rows), bool)])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and payloads of the live entries, in the order added (a cell given
        twice appears twice; written into a grid, the later one wins)."""
        self._flush()
        if self._alive.all():
            return self._rows, self._cols, self._data
        keep = self._alive
        return self._rows[keep], self._cols[keep], self._data[keep]

    def _grid(self) -> np.ndarray | dict[Pos, int]:
        self._flush()
        if self._index is None:
            h = int(self._rows.max()) + 1 if len(self._rows) else 1
            w = int(self._cols.max()) + 1 if len(self._cols) else 1
            live = np.flatnonzero(self._alive)
            if h * w <= max(1 << 24, 8 * len(live)):
                index = np.full((h, w), -1, np.int64)
                index[self._rows[live], self._cols[live]] = live
                self._index = index
            else:
                self._index = dict(zip(zip(self._rows[live].tolist(), self._cols[live].tolist()), live.tolist()))
        return self._index

    def find(self, pos: Pos) -> int:
        grid = self._grid()
        if isinstance(grid, dict):
            return grid.get(pos, -1)
        r, c = pos
        if 0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]:
            return int(grid[r, c])
        return -1

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """`find` for many cells at once."""
        grid = self._grid()
        if isinstance(grid, dict):
            return np.array([grid.get(p, -1) for p in zip(rows.tolist(), cols.tolist())], np.int64)
        h, w = grid.shape
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        out = np.full(len(rows), -1, np.int64)
        out[inside] = grid[rows[inside], cols[inside]]
        return out

    def kill(self, i: int) -> None:
        self._alive[i] = False
        grid = self._grid()
        pos = (int(self._rows[i]), int(self._cols[i]))
        if isinstance(grid, dict):
            grid.pop(pos, None)
        else:
            grid[pos] = -1

    def __len__(self) -> int:
        self._flush()
        return int(self._alive.sum())

    def copy(self) -> "_Columns":
        self._flush()
        out = _Columns(self._dtype)
        out._rows, out._cols, out._data, out._alive = self._rows, self._cols, self._data, self._alive.copy()
        return out


class CellValues(MutableMapping[Pos, CellValue]):
    """Constants and cached values: numbers in arrays, everything else in `other`."""

    def __init__(self) -> None:
        self.numbers = _Columns(np.float64)
        self.other: dict[Pos, CellValue] = {}

    def add_numbers(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        self.numbers.extend(rows, cols, values)

    def number_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.numbers.arrays()

    def numbers_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The number held at each cell; NaN where it holds something else or nothing."""
        idx = self.numbers.lookup(rows, cols)
        data = self.numbers._data
        out = np.where(idx >= 0, data[np.maximum(idx, 0)], np.nan) if len(data) else np.full(len(rows), np.nan)
        if self.other:
            where = {p: i for i, p in enumerate(zip(rows.tolist(), cols.tolist())) if p in self.other}
            for p, i in where.items():
                v = self.other[p]
                out[i] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
        return out

    def __getitem__(self, pos: Pos) -> CellValue:
        if pos in self.other:
            return self.other[pos]
        i = self.numbers.find(pos)
        if i < 0:
            raise KeyError(pos)
        return float(self.numbers._data[i])

    def __setitem__(self, pos: Pos, value: CellValue) -> None:
        i = self.numbers.find(pos)
        if i >= 0:
            self.numbers.kill(i)
        self.other[pos] = value

    def __delitem__(self, pos: Pos) -> None:
        i = self.numbers.find(pos)
        found = self.other.pop(pos, None) is not None or i >= 0
        if i >= 0:
            self.numbers.kill(i)
        if not found:
            raise KeyError(pos)

    def __contains__(self, pos: object) -> bool:
        return pos in self.other or (isinstance(pos, tuple) and self.numbers.find(pos) >= 0)

    def __iter__(self) -> Iterator[Pos]:
        rows, cols, _ = self.numbers.arrays()
        for r, c in zip(rows.tolist(), cols.tolist()):
            if (r, c) not in self.other:
                yield (r, c)
        yield from self.other

    def __len__(self) -> int:
        rows, cols, _ = self.numbers.arrays()
        return len(rows) + len(self.other)

    def copy(self) -> "CellValues":
        out = CellValues()
        out.numbers = self.numbers.copy()
        out.other = dict(self.other)
        return out


class Formulas(MutableMapping[Pos, Formula]):
    """Every formula cell: a list of templates (text, anchor, array range) and, per cell,
    the index of its template. A shared formula copied down 100,000 rows is one template."""

    def __init__(self) -> None:
        self.templates: list[Formula] = []
        self.cells = _Columns(np.int64)

    def add(self, pos: Pos, formula: Formula) -> None:
        self.templates.append(formula)
        self.cells.extend(np.array([pos[0]]), np.array([pos[1]]), np.array([len(self.templates) - 1]))

    def add_shared(self, template: int, rows: np.ndarray, cols: np.ndarray) -> None:
        """Cells whose formula is `templates[template]` moved to them."""
        self.cells.extend(rows, cols, np.full(len(rows), template, np.int64))

    def add_template(self, formula: Formula) -> int:
        self.templates.append(formula)
        return len(self.templates) - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and template indices of every formula cell."""
        return self.cells.arrays()

    def __getitem__(self, pos: Pos) -> Formula:
        i = self.cells.find(pos)
        if i < 0:
            raise KeyError(pos)
        return self.templates[int(self.cells._data[i])]

    def __setitem__(self, pos: Pos, formula: Formula) -> None:
        i = self.cells.find(pos)
        if i >= 0:
            self.cells.kill(i)
        self.add(pos, formula)

    def __delitem__(self, pos: Pos) -> None:
        i = self.cells.find(pos)
        if i < 0:
            raise KeyError(pos)
        self.cells.kill(i)

    def __contains__(self, pos: object) -> bool:
        return isinstance(pos, tuple) and self.cells.find(pos) >= 0

    def __iter__(self) -> Iterator[Pos]:
        rows, cols, _ = self.cells.arrays()
        return zip(rows.tolist(), cols.tolist())

    def __len__(self) -> int:
        return len(self.cells)

    def copy(self) -> "Formulas":
        out = Formulas()
        out.templates = list(self.templates)
        out.cells = self.cells.copy()
        return out
