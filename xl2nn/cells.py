"""Cell addresses and Excel's scalar value types, shared by every stage.

Rows and columns are 1-based, as Excel numbers them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ROW = 1_048_576
MAX_COL = 16_384

ERROR_CODES = ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A",
               "#GETTING_DATA", "#SPILL!", "#CALC!")


@dataclass(frozen=True)
class CellError:
    """An Excel error value such as #DIV/0!; `code` is its text."""

    code: str

    def __str__(self) -> str:
        return self.code


class OverFormula(float):
    """A number to write over a cell's formula, leaving a constant (a parameter cell that was
    initialised by a formula gets its trained value, as Excel's Solver writes a solution)."""

    __slots__ = ()


# A cell's value as read from or written to a workbook. None is an empty cell.
CellValue = float | int | bool | str | CellError | None


def col_letters(col: int) -> str:
    """1 -> 'A', 27 -> 'AA'."""
    out = ""
    while col:
        col, rem = divmod(col - 1, 26)
        out = chr(65 + rem) + out
    return out


def col_number(letters: str) -> int:
    """'A' -> 1, 'aa' -> 27."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n


def a1(row: int, col: int) -> str:
    return f"{col_letters(col)}{row}"


_A1 = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")

# Where the A1 references lie in a formula's text, found without parsing it. Matched whole and
# skipped: string literals, quoted sheet names, bracketed structured references (no groups).
# A row range `4:7` (groups 1-4: $, row, $, row) and a cell `$A4` (groups 5-8: $, letters, $,
# row) are not glued to a name, a number or a call: LOG10( and Table1 are not references.
A1_TOKEN = re.compile(r"""
    "(?:[^"]|"")*"
  | '(?:[^']|'')*'
  | \[(?:[^\[\]]|\[[^\]]*\])*\]
  | (?<![\w.$:])(\$?)([0-9]{1,7}):(\$?)([0-9]{1,7})(?![\w.(!\[:])
  | (?<![\w.$])(\$?)([A-Za-z]{1,3})(\$?)([0-9]{1,7})(?![\w.(!\[])
""", re.X)


def parse_a1(ref: str) -> tuple[int, int]:
    """'B3' or '$B$3' -> (3, 2)."""
    m = _A1.match(ref.strip())
    if not m:
        raise ValueError(f"not a cell address: {ref!r}")
    return int(m.group(2)), col_number(m.group(1))


@dataclass(frozen=True)
class Area:
    """A rectangle of cells on one sheet (inclusive bounds)."""

    sheet: str
    r1: int
    c1: int
    r2: int
    c2: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r2 - self.r1 + 1, self.c2 - self.c1 + 1

    @property
    def size(self) -> int:
        h, w = self.shape
        return h * w

    def cells(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.r1, self.r2 + 1) for c in range(self.c1, self.c2 + 1)]

    def contains(self, row: int, col: int) -> bool:
        return self.r1 <= row <= self.r2 and self.c1 <= col <= self.c2

    @property
    def a1(self) -> str:
        first = a1(self.r1, self.c1)
        if (self.r1, self.c1) == (self.r2, self.c2):
            return first
        return f"{first}:{a1(self.r2, self.c2)}"

    def __str__(self) -> str:
        return f"{quote_sheet(self.sheet)}!{self.a1}"


def quote_sheet(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
        return name
    return "'" + name.replace("'", "''") + "'"


def cell_name(sheet: str, row: int, col: int) -> str:
    return f"{quote_sheet(sheet)}!{a1(row, col)}"
