"""Stage 2: formula parsing, with the workbook's tables and names resolved."""
from __future__ import annotations

from ..errors import FormulaError
from ..reader.workbook import Workbook
from .ast import Node, Ref
from .parser import Scope, TableInfo, parse, tokenize
from .shape import shape_key

__all__ = ["FormulaParser", "Node", "Scope", "parse", "tokenize", "FormulaError"]


class FormulaParser:
    """Parses formulas of one workbook, resolving its tables and defined names."""

    def __init__(self, wb: Workbook) -> None:
        self.wb = wb
        self._tables = {
            key: TableInfo(t.name, t.sheet, t.area.r1, t.area.c1, t.area.r2, t.area.c2,
                           tuple(t.columns), t.header_rows, t.totals_rows)
            for key, t in wb.tables.items()
        }
        self._depth = 0

    def parse(self, text: str, sheet: str, row: int, col: int) -> Node:
        scope = Scope(sheet, row, col, table=lambda n: self._tables.get(n.lower()),
                      name=lambda n, s: self._name(n, s or sheet),
                      sheet_table=lambda: self._table_at(sheet, row, col),
                      lambda_name=lambda n: self._lambda(n, sheet),
                      spill=lambda ref: self._spill(ref, row, col))
        return parse(text, scope)

    def shape(self, text: str, sheet: str, row: int, col: int) -> tuple:
        """A key equal for two formula cells exactly when they parse to the same (relative) AST."""
        key: tuple = (sheet, shape_key(text, row, col))
        if "[" in text:     # [#This Row] depends on whether the row lies in each table's data
            key += (self._table_at(sheet, row, col),
                    tuple(t.r1 + t.header_rows <= row <= t.r2 - t.totals_rows for t in self._tables.values()))
        return key

    def _lambda(self, name: str, sheet: str) -> str | None:
        """The text of a defined name that holds a LAMBDA, for calling it by name."""
        index = self.wb.sheet(sheet).index if sheet in self.wb.sheets else None
        dn = self.wb.name(name, index)
        if dn is None or not dn.text:
            return None
        head = dn.text.lstrip("=").lstrip().upper()
        return dn.text if head.startswith(("LAMBDA(", "_XLFN.LAMBDA(")) else None

    def _spill(self, ref: Ref, row: int, col: int) -> Ref | None:
        """A1# (ANCHORARRAY(A1)): the range of the array formula anchored at A1, with A1's
        $ signs, so copies of the formula move as A1 does."""
        at = ref.area_at(row, col)
        sheet = self.wb.sheets.get(ref.sheet)
        if sheet is None:
            return None
        for area, _ in sheet.arrays:
            if (area.r1, area.c1) == (at.r1, at.c1):
                h, w = area.r2 - area.r1, area.c2 - area.c1
                return Ref(ref.sheet, ref.r1, ref.c1, ref.r1 + h, ref.c1 + w,
                           ref.r1_abs, ref.c1_abs, ref.r1_abs, ref.c1_abs)
        return None

    def _table_at(self, sheet: str, row: int, col: int) -> str:
        for t in self._tables.values():
            if t.sheet == sheet and t.r1 <= row <= t.r2 and t.c1 <= col <= t.c2:
                return t.name
        return ""

    def _name(self, name: str, sheet: str) -> Node | None:
        if name.lower() in self._tables:         # a bare table name means its data
            return self.parse(f"{name}[]", sheet, 1, 1)
        index = self.wb.sheet(sheet).index if sheet in self.wb.sheets else None
        dn = self.wb.name(name, index)
        if dn is None or not dn.text:
            return None
        if self._depth > 20:
            raise FormulaError(f"defined name {name} refers to itself")
        home = self.wb.sheet_by_index(dn.sheet_index) if dn.sheet_index is not None else None
        self._depth += 1
        try:
            # Names are stored with absolute references; relative ones count from A1.
            return self.parse(dn.text, home.name if home else sheet, 1, 1)
        finally:
            self._depth -= 1
