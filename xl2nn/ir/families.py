"""Cell families: a run of copied formulas with one R1C1 shape is one node over a vector.

A family is either a run down a column, a run along a row, a single cell, or the
range of one array (CSE / dynamic-array) formula.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arrays import unique
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
    by_shape: dict[tuple, Node | str] = {}     # R1C1 shape -> its AST, or why it does not parse
    families: list[Family] = []
    problems: list[ParseProblem] = []
    unparsable = Call(UNPARSABLE, ())

    def parsed(text: str, sheet: str, row: int, col: int) -> Node:
        key = parser.shape(text, sheet, row, col)
        got = by_shape.get(key)
        if got is None:
            try:
                node = parser.parse(text, sheet, row, col)
                got = intern.setdefault(node, node)
            except FormulaError as exc:
                got = str(exc)
            by_shape[key] = got
        if isinstance(got, str):
            problems.append(ParseProblem(sheet, row, col, got))
            # Kept as a family so that a model reading this cell is refused, naming it.
            return unparsable
        return got

    def add(sheet: str, rows: np.ndarray, cols: np.ndarray, ast: Node, array: Area | None = None) -> None:
        families.append(Family(len(families), sheet, np.asarray(rows, dtype=np.int64),
                               np.asarray(cols, dtype=np.int64), ast, array))

    for sheet in wb.sheets.values():
        for area, text in sheet.arrays:
            add(sheet.name, np.array([area.r1]), np.array([area.c1]), parsed(text, sheet.name, area.r1, area.c1), area)
        rows, cols, tids = sheet.formulas.arrays()
        if not len(rows):
            continue
        # One parse per template (a shared formula's master, or a lone formula), and one per
        # R1C1 shape among those; the cells get their template's AST.
        asts: list[Node] = []
        ast_ids: dict[int, int] = {}
        used = unique(tids)
        aid_of = np.full(int(used.max()) + 1, -1, np.int64)
        for t in used.tolist():
            f = sheet.formulas.templates[t]
            if f.array is not None:
                continue            # its cells are the array family's
            ast = parsed(f.text, sheet.name, *f.anchor)
            aid_of[t] = ast_ids.setdefault(id(ast), len(asts))
            if aid_of[t] == len(asts):
                asts.append(ast)
        aid = aid_of[tids]
        keep = aid >= 0
        _group(sheet.name, rows[keep], cols[keep], aid[keep], asts, add)
    return families, problems


def _runs(major: np.ndarray, minor: np.ndarray, aid: np.ndarray, fits: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Sort cells by (major, minor) and cut them into runs of consecutive `minor` with one
    AST; returns the sort order and the run starts (with the end appended)."""
    order = np.lexsort((minor, major))
    ma, mi, a = major[order], minor[order], aid[order]
    start = np.ones(len(order), bool)
    start[1:] = (ma[1:] != ma[:-1]) | (mi[1:] != mi[:-1] + 1) | (a[1:] != a[:-1]) | ~fits[a[1:]]
    return order, np.append(np.flatnonzero(start), len(order))


def _group(sheet: str, rows: np.ndarray, cols: np.ndarray, aid: np.ndarray, asts: list[Node], add) -> None:
    """Column runs first (the table-row layout), then row runs among what is left."""
    down = np.array([_fits_run(a, along_rows=True) for a in asts], bool)
    across = np.array([_fits_run(a, along_rows=False) for a in asts], bool)
    order, bounds = _runs(cols, rows, aid, down)
    single = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        idx = order[s:e]
        if e - s > 1:
            add(sheet, rows[idx], cols[idx], asts[int(aid[idx[0]])])
        else:
            single.append(idx[0])
    if not single:
        return
    left = np.array(single, np.int64)
    rows, cols, aid = rows[left], cols[left], aid[left]
    order, bounds = _runs(rows, cols, aid, across)
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        idx = order[s:e]
        add(sheet, rows[idx], cols[idx], asts[int(aid[idx[0]])])


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
