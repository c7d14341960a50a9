"""Leaves of a compiled model that hold formulas in the workbook, cut loose: taken as given.

An input of a forward-only model, a --wrt cell of verify --grad (row k's b is row k-1's new
b), a parameter cell initialised by a formula (`=RAND()*2-1` copied over the weights, `=G6`):
compile_model wants plain numbers there, so the model is compiled from a copy of the workbook
in which those cells hold their values and no formula.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..cells import Area, CellError, cell_name
from ..errors import BadInput
from ..ir.graph import Graph, build_graph
from ..ranges import ranges_text
from ..reader.workbook import Sheet, Workbook
from .grid import Grids, recalculate
from .model import ModelSpec


def feeding(graph: Graph, areas: Sequence[Area]) -> set[int]:
    """The families whose values the cells of `areas` need: their own and their ancestors."""
    own = {f.id for a in areas for r, c in a.cells() if (f := graph.family_at(a.sheet, r, c)) is not None}
    return graph.ancestors(sorted(own))


def cut_loose(wb: Workbook, grids: Grids, leaves: Sequence[Area], flag: str, outside: str,
              blanks: bool = False) -> Workbook:
    """A copy of `wb` in which every cell of `leaves` holds its value in `grids` (a formula's
    recalculated value) and no formula: compile_model wants plain numbers there, and a leaf is
    taken as given. A leaf inside an array formula (it cannot be cut out of it) or holding text,
    a boolean or an error is a one-line error naming it (`outside` says what to do about an
    array formula); so is a blank one unless `blanks` (a blank is not 0 to AVERAGE or COUNT,
    so the function of a number put there is not the one the sheet shows)."""
    cut: dict[str, Sheet] = {}
    for area in leaves:
        sheet = wb.sheets[area.sheet]
        for arr, _ in sheet.arrays:
            if arr.r1 <= area.r2 and area.r1 <= arr.r2 and arr.c1 <= area.c2 and area.c1 <= arr.c2:
                raise BadInput(f"{wb.path}: {flag} {area} reaches into the array formula {arr}; {outside}")
        if area.sheet not in cut:
            cut[area.sheet] = dataclasses.replace(sheet, formulas=sheet.formulas.copy(), values=sheet.values.copy())
        copy = cut[area.sheet]
        for r, c in area.cells():
            v = grids.value(area.sheet, r, c)
            if v is None and not blanks:
                raise BadInput(f"{wb.path}: {flag} cell {cell_name(area.sheet, r, c)} is blank; give it a number "
                               "(a blank is not 0 to AVERAGE or COUNT) or leave it out of the range")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise BadInput(f"{wb.path}: {flag} cell {cell_name(area.sheet, r, c)} holds {shown(v)}, "
                               "not a number")
            copy.formulas.pop((r, c), None)
            if v is not None:
                copy.values[(r, c)] = float(v)
    sheets = {name: cut.get(name, sh) for name, sh in wb.sheets.items()}
    return dataclasses.replace(wb, sheets=sheets)


def shown(v: object) -> str:
    return str(v) if isinstance(v, (bool, CellError)) else repr(v)


def formula_cells(graph: Graph, areas: Sequence[Area]) -> list[tuple[str, int, int]]:
    """The cells of `areas` that hold formulas."""
    return [(a.sheet, r, c) for a in areas for r, c in a.cells() if graph.family_at(a.sheet, r, c) is not None]


def loosen_parameters(wb: Workbook, graph: Graph, spec: ModelSpec) -> tuple[Workbook, Graph, str]:
    """Parameter cells holding formulas take their current values as the starting weights, as
    Excel's Solver does when it keeps a solution (it writes numbers over them). Returns the
    workbook and graph to compile (the same ones when no parameter holds a formula) and a
    one-line warning saying which cells, or ""."""
    cells = formula_cells(graph, spec.params)
    if not cells:
        return wb, graph, ""
    grids = recalculate(wb, graph, only=feeding(graph, spec.params)).grids
    cut = cut_loose(wb, grids, spec.params, "parameter range", "give parameter cells outside it", blanks=True)
    first = graph.family_at(*cells[0])
    warning = (f"{len(cells):,} parameter cell(s) hold formulas ({ranges_text([cell_name(*c) for c in cells], 3)}, "
               f"e.g. {first.formula_at(cells[0][1], cells[0][2])}): their current values are the starting weights, "
               "and the output holds numbers there, as Excel's Solver writes a solution")
    return cut, build_graph(cut), warning
