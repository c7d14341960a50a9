"""Copied formulas saved as one text per cell, recognised in bulk.

Excel saves a column of copied formulas as one shared formula. openpyxl, XlsxWriter,
LibreOffice and most generators write each cell's own text instead: `($A5-AG5)^2`,
`($A6-AG6)^2`, ... A cell whose text is byte for byte the text of another cell of its
column with every relative row number shifted by the distance between their rows holds
that formula moved, which is exactly what a shared formula means; it is stored as one,
and the formula is parsed once for the column, not once per cell.

The test runs over all the cells of a column at once with NumPy, one piece of the
template's text at a time (a literal run of bytes, or a relative row number rendered in
decimal), so a 100,000-row column costs a few array operations per piece, not a Python
call per cell. Whatever does not match is left to the cell-by-cell path.
"""
from __future__ import annotations

import re

import numpy as np

from ..cells import A1_TOKEN, MAX_COL, MAX_ROW, col_number

_TRIES = 8              # templates tried per column before the rest goes cell by cell
_POW10 = 10 ** np.arange(8, dtype=np.int64)
Piece = bytes | int     # literal bytes, or the row number (at the template's row) of a relative reference


_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);")


def _char_starts(raw: str) -> list[int]:
    """Where each character of the unescaped text begins in `raw` (an entity is one
    character), and where the text ends."""
    out: list[int] = []
    at = 0
    for m in _ENTITY.finditer(raw):
        out.extend(range(at, m.start()))
        out.append(m.start())
        at = m.end()
    out.extend(range(at, len(raw)))
    out.append(len(raw))
    return out


def pieces(raw: str, text: str) -> list[Piece] | None:
    """The template as literal pieces of `raw` and relative row numbers, or None when it
    cannot be matched this way. `raw` is the text as it is spelled in the part (LibreOffice
    writes `&quot;`), `text` the formula it means: the references are found in `text`, where
    a string literal is one, and their digits located in `raw`."""
    starts = _char_starts(raw)
    if len(starts) != len(text) + 1:
        return None                                     # an entity we do not know
    out: list[Piece] = []
    at = 0
    for m in A1_TOKEN.finditer(text):
        if m.group(2) is not None:                      # a row range 4:7: each side may move
            if not all(1 <= int(r) <= MAX_ROW for r in m.group(2, 4)):
                continue                                # not a range: literal text, as shape_key has it
            sides = [(m.start(2), m.group(1), m.group(2)), (m.start(4), m.group(3), m.group(4))]
        elif m.group(6) is not None:
            if col_number(m.group(6)) > MAX_COL:
                continue                                # a name such as ZZZ1: literal text
            sides = [(m.start(8), m.group(7), m.group(8))]
        else:
            continue
        for start, dollar, digits in sides:
            row = int(digits)
            if dollar or not 1 <= row <= MAX_ROW:
                continue                                # absolute, or not a row: literal text
            if digits.startswith("0"):
                return None                             # A04: its copies are not spelled by moving it
            begin, end = starts[start], starts[start + len(digits)]
            if raw[begin:end] != digits:
                return None                             # digits written as entities
            out.append(raw[at:begin].encode())
            out.append(row)
            at = end
    out.append(raw[at:].encode())
    return [p for p in out if p != b""]


def matches(a: np.ndarray, starts: np.ndarray, ends: np.ndarray, shift: np.ndarray,
            template: list[Piece]) -> np.ndarray:
    """Which cells' texts (a[starts[i]:ends[i]]) are `template` with each relative row number
    moved down by shift[i] rows."""
    ok = np.ones(len(starts), bool)
    pos = starts.astype(np.int64).copy()
    last = len(a) - 1
    for piece in template:
        if isinstance(piece, bytes):
            ok &= pos + len(piece) <= ends
            for k, byte in enumerate(piece):           # a byte at a time: no (cells × length) temporary
                ok &= np.take(a, np.minimum(pos + k, last)) == byte
            pos += len(piece)
        else:
            row = piece + shift
            ok &= (row >= 1) & (row <= MAX_ROW)
            width = np.searchsorted(_POW10, np.maximum(row, 1), side="right")    # its digit count
            for k in range(int(width.max(initial=1))):
                inside = k < width
                digit = (row // _POW10[np.maximum(width - 1 - k, 0)]) % 10
                ok &= ~inside | (np.take(a, np.minimum(pos + k, last)) == 48 + digit)
            pos += width
    return ok & (pos == ends)


def copied_runs(a: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                decode) -> tuple[list[tuple[str, int, np.ndarray]], np.ndarray]:
    """Group formula cells (texts a[starts:ends]) into moved copies, column by column.

    Returns (formula, template cell, member cells) for each group (indices; the template is
    one of its members) and the cells left over. `decode(i)` is cell i's formula as text
    (unescaped).
    """
    groups: list[tuple[str, int, np.ndarray]] = []
    rest: list[np.ndarray] = []
    order = np.lexsort((rows, cols))
    bounds = np.flatnonzero(np.diff(cols[order])) + 1
    for idx in np.split(order, bounds):
        pending = idx
        for _ in range(_TRIES):
            if len(pending) < 2:
                break
            t = int(pending[0])
            raw, text = a[starts[t]:ends[t]].tobytes().decode(), decode(t)
            template = pieces(raw, text)
            hit = matches(a, starts[pending], ends[pending], rows[pending] - rows[t], template) \
                if template is not None else np.zeros(len(pending), bool)
            if not hit[0]:                  # the template must reproduce itself; else cell by cell
                rest.append(pending[:1])
                pending = pending[1:]
                continue
            groups.append((text, t, pending[hit]))
            pending = pending[~hit]
        rest.append(pending)
    return groups, np.concatenate(rest) if rest else np.empty(0, np.int64)
