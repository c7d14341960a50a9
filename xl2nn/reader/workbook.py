"""What the reader hands to the compiler: cells, formulas, tables, names."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..cells import Area
from .store import CellValues, Formula, Formulas

__all__ = ["CalcSettings", "Workbook", "Sheet", "Table", "DefinedName", "Formula", "Formulas", "CellValues"]


@dataclass
class Table:
    name: str
    sheet: str
    area: Area                   # the whole table, headers and totals included
    columns: list[str]
    header_rows: int = 1
    totals_rows: int = 0

    @property
    def data_rows(self) -> tuple[int, int]:
        return self.area.r1 + self.header_rows, self.area.r2 - self.totals_rows


@dataclass
class Sheet:
    name: str
    index: int
    values: CellValues = field(default_factory=CellValues)   # constants and cached values
    formulas: Formulas = field(default_factory=Formulas)
    arrays: list[tuple[Area, str]] = field(default_factory=list)
    # Anchors of the arrays Excel 365 saved as dynamic arrays (cm pointing at XLDAPR metadata):
    # they spill, and re-spill when their size changes; the others are legacy (CSE) arrays.
    dynamic: set[tuple[int, int]] = field(default_factory=set)
    max_row: int = 0
    max_col: int = 0
    state: str = "visible"
    # ((zip CRC, size) of the part, reader.scan.ValueSpans) when the fast reader read it
    spans: tuple[tuple[int, int], object] | None = field(default=None, repr=False, compare=False)

    def label(self, row: int, col: int) -> str | None:
        """The nearest text above or left of a cell: a header for parameter names."""
        for r in range(row - 1, max(0, row - 4), -1):
            v = self.values.get((r, col))
            if isinstance(v, str) and v.strip() and (r, col) not in self.formulas:
                return v.strip()
        for c in range(col - 1, max(0, col - 4), -1):
            v = self.values.get((row, c))
            if isinstance(v, str) and v.strip() and (row, c) not in self.formulas:
                return v.strip()
        return None


@dataclass(frozen=True)
class DefinedName:
    name: str
    text: str
    sheet_index: int | None      # None: workbook scope
    hidden: bool = False


@dataclass(frozen=True)
class CalcSettings:
    """Excel's iterative calculation (File > Options > Formulas), from workbook.xml's
    <calcPr iterate="1" iterateCount="100" iterateDelta="0.001">; absent attributes take
    the OOXML defaults, which are Excel's."""
    iterate: bool = False       # circular references are iterated (else: an error in Excel)
    count: int = 100            # at most this many iterations per recalculation
    delta: float = 0.001        # stop once no cell of the cycle changes by this much or more


@dataclass
class Workbook:
    path: str
    sheets: dict[str, Sheet]
    tables: dict[str, Table]     # keyed by lower-case name
    names: list[DefinedName]
    warnings: list[str] = field(default_factory=list)
    active_sheet: str | None = None   # the sheet the workbook opens on (Excel's activeTab)
    calc: CalcSettings = field(default_factory=CalcSettings)

    def sheet(self, name: str) -> Sheet:
        for s in self.sheets.values():
            if s.name.lower() == name.lower():
                return s
        raise KeyError(name)

    def sheet_by_index(self, index: int) -> Sheet | None:
        for s in self.sheets.values():
            if s.index == index:
                return s
        return None

    def name(self, name: str, sheet_index: int | None) -> DefinedName | None:
        """Look a name up as Excel does: the sheet's own scope first, then the workbook's."""
        low = name.lower()
        found = None
        for n in self.names:
            if n.name.lower() != low:
                continue
            if n.sheet_index is not None and n.sheet_index == sheet_index:
                return n
            if n.sheet_index is None:
                found = n
        return found
