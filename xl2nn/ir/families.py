"""Cell families: a run of copied formulas with one R1C1 shape is one node over a vector.

A family is a run down a column, a run along a row, a rectangle of such runs side by
side, a single cell, or the range of one multi-cell array (CSE / dynamic-array) formula.
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
from .intersect import candidates, inside, rewrite, single_references
from .references import read_refs


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
    written: Node | None = None  # the AST as written, where implicit intersection changed it
    # Where its computed references (OFFSET, INDIRECT, ...) land, once worked out
    # (compiler/resolve.py): blocks it reads besides its plain references.
    targets: list[Area] = field(default_factory=list)

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
        return self.formula_at(int(self.rows[0]), int(self.cols[0]))

    def formula_at(self, row: int, col: int) -> str:
        return "=" + to_text(self.written or self.ast, row, col, self.sheet)

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

    def add(sheet: str, rows: np.ndarray, cols: np.ndarray, ast: Node, array: Area | None = None,
            written: Node | None = None) -> None:
        families.append(Family(len(families), sheet, np.asarray(rows, dtype=np.int64),
                               np.asarray(cols, dtype=np.int64), ast, array, written=written))

    for sheet in wb.sheets.values():
        for area, text in sheet.arrays:
            if area.size > 1:       # a one-cell array formula joins its neighbours below
                add(sheet.name, np.array([area.r1]), np.array([area.c1]),
                    parsed(text, sheet.name, area.r1, area.c1), area)
        rows, cols, tids = sheet.formulas.arrays()
        if not len(rows):
            continue
        # One parse per template (a shared formula's master, or a lone formula), and one per
        # R1C1 shape among those; the cells get their template's AST. Array formulas keep
        # their ASTs as written; ordinary ones get implicit intersection below.
        asts: list[Node] = []
        ast_ids: dict[tuple[int, bool], int] = {}
        plain: list[bool] = []
        used = unique(tids)
        aid_of = np.full(int(used.max()) + 1, -1, np.int64)
        for t in used.tolist():
            f = sheet.formulas.templates[t]
            if f.array is not None and f.array.size > 1:
                continue            # its cells are the array family's
            ast = parsed(f.text, sheet.name, *f.anchor)
            key = (id(ast), f.array is None)
            aid_of[t] = ast_ids.setdefault(key, len(asts))
            if aid_of[t] == len(asts):
                asts.append(ast)
                plain.append(key[1])
        aid = aid_of[tids]
        keep = aid >= 0
        rows, cols, aid = rows[keep], cols[keep], aid[keep]
        written = list(asts)
        aid = _intersect(rows, cols, aid, asts, plain, written)
        _group(sheet.name, rows, cols, aid, asts, lambda sh, r, c, a: add(
            sh, r, c, asts[a], written=written[a] if written[a] is not asts[a] else None))
    return families, problems


def _intersect(rows: np.ndarray, cols: np.ndarray, aid: np.ndarray, asts: list[Node],
               plain: list[bool], written: list[Node]) -> np.ndarray:
    """Give ordinary formulas that read a range as one value the AST for their position
    (implicit intersection): new ASTs are appended to `asts` (what they were written as to
    `written`), new ids returned."""
    aid = aid.copy()
    variants: dict[tuple[Node, int], int] = {}
    for a in range(len(plain)):
        # A computed reference (OFFSET, INDIRECT) read as one value is intersected when it is
        # computed: marked here with the @ operator, as Excel 365 writes it.
        asts[a] = single_references(asts[a], array=not plain[a])
        cands = candidates(asts[a], array=not plain[a])
        if not cands:
            continue
        at = np.flatnonzero(aid == a)
        code = np.zeros(len(at), np.int64)
        for j, ref in enumerate(cands):
            code |= inside(ref, rows[at], cols[at]).astype(np.int64) << j
        for c in unique(code).tolist():
            node = rewrite(asts[a], tuple(bool(c >> j & 1) for j in range(len(cands))), array=not plain[a])
            new = variants.setdefault((node, a), len(asts))
            if new == len(asts):
                asts.append(node)
                written.append(written[a])
            aid[at[code == c]] = new
    return aid


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
            add(sheet, rows[idx], cols[idx], int(aid[idx[0]]))
        else:
            single.append(idx[0])
    if not single:
        return
    left = np.array(single, np.int64)
    rows, cols, aid = rows[left], cols[left], aid[left]
    order, bounds = _runs(rows, cols, aid, across)
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        idx = order[s:e]
        add(sheet, rows[idx], cols[idx], int(aid[idx[0]]))


def rectangles(families: list[Family], same_sources) -> list[Family]:
    """Side-by-side column runs of one formula (filled right and down) merged into one
    family over the rectangle, in row-major order, so a block its readers take is a
    strided view of it. `same_sources(a, b)` says whether two runs read from the same
    producers: where they do not (one ReLU column per unit, each on its own unit's
    column), a merged family would only have to gather its input back together."""
    runs = [f for f in families if f.array is None and len(f.rows) > 1 and f.cols[0] == f.cols[-1]
            and _fits_run(f.ast, along_rows=False)]
    runs.sort(key=lambda f: (f.sheet, id(f.ast), int(f.rows[0]), len(f.rows), int(f.cols[0])))
    merged: dict[int, list[Family]] = {}
    block: list[Family] = []
    for f in runs:
        prev = block[-1] if block else None
        if (prev is not None and f.sheet == prev.sheet and f.ast is prev.ast and f.written is prev.written
                and int(f.rows[0]) == int(prev.rows[0]) and len(f.rows) == len(prev.rows)
                and int(f.cols[0]) == int(prev.cols[0]) + 1 and same_sources(prev, f)):
            block.append(f)
            continue
        if len(block) > 1:
            merged[block[0].id] = block
        block = [f]
    if len(block) > 1:
        merged[block[0].id] = block
    if not merged:
        return families
    gone = {f.id for b in merged.values() for f in b[1:]}
    out: list[Family] = []
    for f in families:
        if f.id in gone:
            continue
        if f.id in merged:
            b = merged[f.id]
            f = Family(0, f.sheet, np.stack([g.rows for g in b], axis=1).reshape(-1),
                       np.stack([g.cols for g in b], axis=1).reshape(-1), f.ast, written=f.written)
        f.id = len(out)
        out.append(f)
    return out


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
    """A family whose cells read each other (a recurrence) in smaller pieces: a rectangle
    into its rows (row k computed from row k-1: the per-step SGD sheet) or else its columns
    (an RNN unrolled across), whichever does not read itself; a run into single cells."""
    if len(np.unique(fam.rows)) > 1 and len(np.unique(fam.cols)) > 1:
        for axis in (fam.rows, fam.cols):
            pieces = [np.flatnonzero(axis == v) for v in np.unique(axis)]
            parts = [Family(next_id + i, fam.sheet, fam.rows[p], fam.cols[p], fam.ast, written=fam.written)
                     for i, p in enumerate(pieces)]
            if not any(_reads_itself(p) for p in parts):
                return parts
    return [Family(next_id + i, fam.sheet, fam.rows[i:i + 1], fam.cols[i:i + 1], fam.ast, written=fam.written)
            for i in range(len(fam.rows))]


def _reads_itself(fam: Family) -> bool:
    a = fam.area
    for ref in read_refs(fam.ast):
        if ref.sheet != fam.sheet:
            continue
        top, left, bottom, right = ref.bounds(fam.rows, fam.cols)
        if top.min() <= a.r2 and a.r1 <= bottom.max() and left.min() <= a.c2 and a.c1 <= right.max():
            return True
    return False


__all__ = ["Family", "ParseProblem", "build_families", "calls", "rectangles", "split", "a1"]
