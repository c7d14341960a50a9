"""Cell families: a run of copied formulas with one R1C1 shape is one node over a vector.

A family is either a run down a column, a run along a row, a single cell, or the
range of one array (CSE / dynamic-array) formula.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cells import Area, a1, cell_name
from ..errors import FormulaError
from ..formula import FormulaParser
from ..formula.ast import Call, Node, Ref, to_text, walk
from ..reader.workbook import Workbook


UNPARSABLE = "(unparsable formula)"


@dataclass(eq=False)
class Family:
    id: int
    sheet: str
    rows: np.ndarray          # (F,) rows of the cells the formula is evaluated at
    cols: np.ndarray          # (F,)
    ast: Node
    array: Area | None = None  # array formula: evaluated once at the anchor, fills this range
    deps: set[int] = field(default_factory=set)

    @property
    def size(self) -> int:
        return self.array.size if self.array is not None else len(self.rows)

    @property
    def area(self) -> Area:
        if self.array is not None:
            return self.array
        return Area(self.sheet, int(self.rows.min()), int(self.cols.min()),
                    int(self.rows.max()), int(self.cols.max()))

    def out_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of every cell this family writes, in output order."""
        if self.array is None:
            return self.rows, self.cols
        a = self.array
        rr, cc = np.meshgrid(np.arange(a.r1, a.r2 + 1), np.arange(a.c1, a.c2 + 1), indexing="ij")
        return rr.reshape(-1), cc.reshape(-1)

    @property
    def formula(self) -> str:
        """The formula as written in the family's first cell."""
        return "=" + to_text(self.ast, int(self.rows[0]), int(self.cols[0]), self.sheet)

    def __str__(self) -> str:
        return f"{self.area}"

    def cell(self, i: int = 0) -> str:
        return cell_name(self.sheet, int(self.rows[i]), int(self.cols[i]))


@dataclass
class ParseProblem:
    sheet: str
    row: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{cell_name(self.sheet, self.row, self.col)}: {self.message}"


def calls(node: Node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, Call)}


def build_families(wb: Workbook) -> tuple[list[Family], list[ParseProblem]]:
    parser = FormulaParser(wb)
    intern: dict[Node, Node] = {}
    families: list[Family] = []
    problems: list[ParseProblem] = []

    def parsed(text: str, sheet: str, row: int, col: int) -> Node | None:
        try:
            node = parser.parse(text, sheet, row, col)
        except FormulaError as exc:
            problems.append(ParseProblem(sheet, row, col, str(exc)))
            # Kept as a family so that a model reading this cell is refused, naming it.
            node = Call(UNPARSABLE, ())
        return intern.setdefault(node, node)

    def add(sheet: str, rows: list[int], cols: list[int], ast: Node, array: Area | None = None) -> None:
        families.append(Family(len(families), sheet, np.asarray(rows, dtype=np.int64),
                               np.asarray(cols, dtype=np.int64), ast, array))

    for sheet in wb.sheets.values():
        for area, text in sheet.arrays:
            ast = parsed(text, sheet.name, area.r1, area.c1)
            if ast is not None:
                add(sheet.name, [area.r1], [area.c1], ast, area)
        shapes: dict[tuple[int, int], Node] = {}
        masters: dict[tuple[int, int], Node | None] = {}
        for pos, f in sheet.formulas.items():
            if f.array is not None:
                continue
            if f.anchor != pos:
                # A shared-formula child has its master's R1C1 shape by definition.
                if f.anchor not in masters:
                    masters[f.anchor] = parsed(f.text, sheet.name, *f.anchor)
                ast = masters[f.anchor]
            else:
                ast = parsed(f.text, sheet.name, *pos)
                masters.setdefault(pos, ast)
            if ast is not None:
                shapes[pos] = ast
        _group(sheet.name, shapes, add)
    return families, problems


def _group(sheet: str, shapes: dict[tuple[int, int], Node], add) -> None:
    """Column runs first (the table-row layout), then row runs among what is left."""
    by_col: dict[int, list[int]] = {}
    for r, c in shapes:
        by_col.setdefault(c, []).append(r)
    single: dict[tuple[int, int], Node] = {}
    for c, rows in by_col.items():
        rows.sort()
        start = 0
        for i in range(1, len(rows) + 1):
            if i < len(rows) and rows[i] == rows[i - 1] + 1 and shapes[(rows[i], c)] is shapes[(rows[start], c)] \
                    and _fits_run(shapes[(rows[start], c)], along_rows=True):
                continue
            run = rows[start:i]
            if len(run) > 1:
                add(sheet, run, [c] * len(run), shapes[(run[0], c)])
            else:
                single[(run[0], c)] = shapes[(run[0], c)]
            start = i
    by_row: dict[int, list[int]] = {}
    for r, c in single:
        by_row.setdefault(r, []).append(c)
    for r, cols in by_row.items():
        cols.sort()
        start = 0
        for i in range(1, len(cols) + 1):
            if i < len(cols) and cols[i] == cols[i - 1] + 1 and single[(r, cols[i])] is single[(r, cols[start])] \
                    and _fits_run(single[(r, cols[start])], along_rows=False):
                continue
            run = cols[start:i]
            add(sheet, [r] * len(run), run, single[(r, run[0])])
            start = i


def _fits_run(ast: Node, along_rows: bool) -> bool:
    """A reference whose corners mix $ and relative along the run (e.g. $A$1:A1) grows
    from cell to cell: the copies see different shapes, so they cannot share one op."""
    for n in walk(ast):
        if isinstance(n, Ref):
            if along_rows and n.r1_abs != n.r2_abs:
                return False
            if not along_rows and n.c1_abs != n.c2_abs:
                return False
    return True


def split(fam: Family, next_id: int) -> list[Family]:
    """One family per cell: for runs whose cells read each other (recurrences)."""
    return [Family(next_id + i, fam.sheet, fam.rows[i:i + 1], fam.cols[i:i + 1], fam.ast)
            for i in range(len(fam.rows))]


__all__ = ["Family", "ParseProblem", "build_families", "calls", "split", "a1"]
