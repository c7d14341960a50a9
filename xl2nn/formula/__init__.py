"""Stage 2: formula parsing, with the workbook's tables and names resolved."""
from __future__ import annotations

import re

from ..cells import a1, cell_name, parse_a1
from ..errors import FormulaError
from ..reader.workbook import Sheet, Workbook
from .ast import ArrayLit, Binary, Boolean, Call, ErrorLit, Missing, Node, Number, Ref, Text, Unary
from .parser import Scope, TableInfo, parse, tokenize
from .shape import shape_key

# A spill reference in a formula's text (A1# or ANCHORARRAY(A1)): its AST depends on the size
# of what the target spills, not on the formula's R1C1 shape alone.
_SPILL_HINT = re.compile(r"ANCHORARRAY|#(?![A-Za-z])", re.I)      # (error literals: #N/A, #REF!, ...)

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
        self._targets: dict[tuple[str, int, int], tuple] = {}    # spill targets, described

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
        if _SPILL_HINT.search(text):
            # Two copies of =ANCHORARRAY(U37)/U40 whose targets spill different sizes parse to
            # different ASTs: key them by what each target is (one per spill, in order).
            key += (self._spill_key(text, sheet, row, col),)
        return key

    def _spill_key(self, text: str, sheet: str, row: int, col: int) -> tuple:
        try:
            toks = tokenize(text.strip().lstrip("="))
        except FormulaError:
            return ("cell", row, col)
        out: list[tuple] = []
        for i, tok in enumerate(toks):
            target = None
            if tok.kind == "op" and tok.text == "#":
                if i == 0 or toks[i - 1].kind != "ref":
                    return ("cell", row, col)       # x# of a LET name or a call: parse per cell
                target = toks[i - 1].text
            elif tok.kind == "func" and tok.text.upper().endswith("ANCHORARRAY"):
                if not (i + 3 < len(toks) and toks[i + 2].kind == "ref" and toks[i + 3].text == ")"):
                    return ("cell", row, col)       # ANCHORARRAY of a name or a call: parse per cell
                target = toks[i + 2].text
            if target is None:
                continue
            where, _, body = target.rpartition("!")
            where = where[1:-1].replace("''", "'") if where.startswith("'") else where
            try:
                r, c = parse_a1(body.split(":")[0].replace("$", ""))
            except ValueError:
                return ("cell", row, col)
            out.append(self._target(where or sheet, r, c))
        return tuple(out)

    def _sheet(self, name: str) -> Sheet | None:
        try:
            return self.wb.sheet(name)          # sheet names ignore case, as Excel's do
        except KeyError:
            return None

    def _target(self, sheet_name: str, r: int, c: int) -> tuple:
        """What a spill reference to (sheet, r, c) finds: ('array', h, w) for an array's anchor,
        ('formula', scalar) for an ordinary formula cell, ('none',) otherwise."""
        key = (sheet_name.lower(), r, c)
        got = self._targets.get(key)
        if got is not None:
            return got
        self._targets[key] = ("busy",)          # a cycle of spill references: unknown
        sheet = self._sheet(sheet_name)
        got = ("none",)
        if sheet is not None:
            for area, _ in sheet.arrays:
                if (area.r1, area.c1) == (r, c):
                    got = ("array", area.r2 - area.r1, area.c2 - area.c1)
                    break
            else:
                f = sheet.formulas.get((r, c))
                if f is not None and f.array is None:
                    try:
                        got = ("formula", _scalar(self.parse(f.text, sheet.name, *f.anchor)), f.text)
                    except FormulaError:
                        got = ("formula", False, f.text)
        self._targets[key] = got
        return got

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
        $ signs, so copies of the formula move as A1 does. None (#REF!, as in Excel) when A1
        holds no array: a constant, nothing, a cell inside another's spill, or an ordinary
        formula whose value is one number. An ordinary formula that computes an array is
        a file Excel 365 did not write (it saves a formula that spills as a dynamic array,
        with its range): its spill range is unknown, and the cell says so."""
        at = ref.area_at(row, col)
        target = self._target(ref.sheet, at.r1, at.c1)
        if target[0] == "array":
            h, w = target[1], target[2]
            sheet = self._sheet(ref.sheet)
            return Ref(sheet.name if sheet is not None else ref.sheet, ref.r1, ref.c1, ref.r1 + h, ref.c1 + w,
                       ref.r1_abs, ref.c1_abs, ref.r1_abs, ref.c1_abs)
        cell = cell_name(ref.sheet, at.r1, at.c1)
        if target[0] == "busy":
            raise FormulaError(f"the spill references through {cell} go round in a circle: its spill range is unknown")
        if target[0] == "formula" and not target[1]:
            raise FormulaError(
                f"{a1(at.r1, at.c1)}# reads what {cell} spills, but {cell} holds an ordinary formula "
                f"(={target[2]}), not a dynamic array, so its spill range is unknown (Excel 365 saves a "
                f"formula that spills as a dynamic array with its range; Excel would give #REF! here)")
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


# Functions whose value is one value whatever they are given (they aggregate).
_AGGREGATES = frozenset({
    "SUM", "AVERAGE", "COUNT", "COUNTA", "COUNTBLANK", "MAX", "MIN", "PRODUCT", "SUMPRODUCT", "SUMSQ",
    "MEDIAN", "STDEV", "STDEV.S", "STDEV.P", "STDEVP", "VAR", "VAR.S", "VAR.P", "VARP", "AND", "OR",
    "ROWS", "COLUMNS", "CONCAT", "TEXTJOIN", "SUMX2MY2", "SUMX2PY2", "SUMXMY2"})
# Functions that can make an array out of single values.
_ARRAY_MAKERS = frozenset({"SEQUENCE", "MAKEARRAY", "TRANSPOSE", "MMULT", "INDEX", "OFFSET", "INDIRECT",
                           "CHOOSE", "MAP", "HSTACK", "VSTACK", "RANDARRAY", "SCAN", "BYROW", "BYCOL"})


def _scalar(node: Node) -> bool:
    """Whether a formula's value is certainly one value, even computed as an array."""
    if isinstance(node, (Number, Text, Boolean, ErrorLit, Missing)):
        return True
    if isinstance(node, Ref):
        return node.shape == (1, 1)
    if isinstance(node, ArrayLit):
        return len(node.rows) == 1 and len(node.rows[0]) == 1
    if isinstance(node, Unary):
        return _scalar(node.arg)
    if isinstance(node, Binary):
        return _scalar(node.left) and _scalar(node.right)
    if isinstance(node, Call):
        if node.name in _AGGREGATES:
            return True
        return node.name not in _ARRAY_MAKERS and all(_scalar(a) for a in node.args)
    return False
