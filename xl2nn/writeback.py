"""Recomputed values back into a copy of the workbook, as the formula cells' cached values."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .cells import CellValue
from .compiler.grid import Recalc
from .errors import BadInput
from .ir.graph import Graph
from .reader.workbook import Workbook
from .writer import NewSheet, patch_workbook


def recalculated_values(graph: Graph, recalc: Recalc) -> dict[str, dict[tuple[int, int], CellValue]]:
    """Every recomputed formula cell's value, per sheet (families we skipped keep theirs)."""
    updates: dict[str, dict[tuple[int, int], CellValue]] = {}
    for fam in graph.families:
        if fam.id in recalc.skipped:
            continue
        rows, cols = fam.out_cells()
        sheet = updates.setdefault(fam.sheet, {})
        for r, c in zip(rows.tolist(), cols.tolist()):
            sheet[(r, c)] = recalc.grids.value(fam.sheet, r, c)
    return updates


def write_recalculated(src: Path, dst: Path, wb: Workbook, graph: Graph, recalc: Recalc, *,
                       extra: Mapping[str, Mapping[tuple[int, int], CellValue]] | None = None,
                       new_sheets: Sequence[NewSheet] = (), recalc_on_open: bool = False) -> int:
    """Write `dst`: `src` with recomputed cached values (plus `extra` cells); returns cells written."""
    if dst.resolve() == src.resolve():
        raise BadInput(f"{dst}: the output must be a new file, not the input")
    if not dst.parent.exists():
        raise BadInput(f"{dst}: folder {dst.parent} does not exist")
    updates = recalculated_values(graph, recalc)
    for sheet, cells in (extra or {}).items():
        updates.setdefault(sheet, {}).update(cells)
    try:
        patch_workbook(src, dst, updates, new_sheets=new_sheets, recalc_on_open=recalc_on_open)
    except PermissionError:
        raise BadInput(f"{dst}: cannot write there (permission denied)") from None
    except ValueError as exc:
        raise BadInput(f"{dst}: {exc}") from None
    return sum(len(c) for c in updates.values())
