"""Recomputed values back into a copy of the workbook, as the formula cells' cached values."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np

from .cells import Area, CellValue, OverFormula
from .compiler.grid import Recalc, recalculate
from .errors import BadInput
from .ir.graph import Graph
from .ooxml import M, ZIP_ERRORS, parse_xml, read_part, workbook_part
from .reader.workbook import Workbook
from .functions.values import NUM
from .writer import CellColumns, NewSheet, patch_workbook
from .writer.atomic import output_problem


def recalculated_values(graph: Graph, recalc: Recalc) -> dict[str, CellColumns]:
    """Every recomputed formula cell's value, per sheet (families we skipped keep theirs):
    numbers as arrays, the rest (text, booleans, errors, empties) by cell."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for fam in graph.families:
        if fam.id in recalc.skipped:
            continue
        rows, cols = fam.out_cells()
        parts.setdefault(fam.sheet, []).append((rows, cols))
    out: dict[str, CellColumns] = {}
    for sheet, pieces in parts.items():
        rows = np.concatenate([r for r, _ in pieces])
        cols = np.concatenate([c for _, c in pieces])
        is_num = recalc.grids.kind[sheet][rows, cols] == NUM
        rest = {(r, c): recalc.grids.value(sheet, r, c)
                for r, c in zip(rows[~is_num].tolist(), cols[~is_num].tolist())}
        out[sheet] = CellColumns(rows[is_num], cols[is_num], recalc.grids.num[sheet][rows[is_num], cols[is_num]],
                                 rest)
    return out


def write_recalculated(src: Path, dst: Path, wb: Workbook, graph: Graph, recalc: Recalc, *,
                       extra: Mapping[str, Mapping[tuple[int, int], CellValue]] | None = None,
                       new_sheets: Sequence[NewSheet] = (), recalc_on_open: bool = False) -> int:
    """Write `dst`: `src` with recomputed cached values (plus `extra` cells); returns cells written."""
    why = output_problem(dst, src)
    if why:
        raise BadInput(f"{dst}: {why}")
    updates: dict[str, CellColumns | dict[tuple[int, int], CellValue]] = dict(recalculated_values(graph, recalc))
    for sheet, cells in (extra or {}).items():
        target = updates.setdefault(sheet, {})
        (target.other if isinstance(target, CellColumns) else target).update(cells)
    try:
        patch_workbook(src, dst, updates, new_sheets=new_sheets, recalc_on_open=recalc_on_open,
                       spans={s.name: s.spans for s in wb.sheets.values() if s.spans is not None})
    except PermissionError:
        raise BadInput(f"{dst}: cannot write there (permission denied)") from None
    except ValueError as exc:
        raise BadInput(f"{dst}: {exc}") from None
    return sum(len(c) for c in updates.values())


# --------------------------------------------------------------------------- after training

def sheet_names(src: Path) -> list[str]:
    """Every sheet's name in the package (worksheets, chartsheets, dialog sheets)."""
    label = str(src)
    try:
        with zipfile.ZipFile(src) as zf:
            part = workbook_part(zf, label)
            root = parse_xml(read_part(zf, part, label), label, part)
    except ZIP_ERRORS:
        raise BadInput(f"{label}: not an xlsx file (not a zip archive)") from None
    sheets = root.find(M + "sheets")
    return [el.get("name", "") for el in (sheets if sheets is not None else [])]


def free_sheet_name(taken: Sequence[str], base: str) -> str:
    """`base`, or base_2, base_3, ... : the first name no sheet has (Excel compares case-blind)."""
    low = {t.lower() for t in taken}
    name, k = base, 1
    while name.lower() in low:
        k += 1
        name = f"{base}_{k}"
    return name


def parameter_dependents(graph: Graph, params: Sequence[Area]) -> set[int]:
    """Families whose value depends on the parameter cells, directly or through others."""
    return graph.dependents(graph.reading(list(params)))


def parameter_cells(areas: Mapping[str, Area], weights: Mapping[str, np.ndarray],
                    over: Collection[tuple[str, int, int]] = ()) -> dict[str, dict[tuple[int, int], float]]:
    """Weights by parameter name -> the values of their cells, by sheet and (row, col); the
    cells in `over` held formulas, and get the number written over the formula."""
    values: dict[str, dict[tuple[int, int], float]] = {}
    over = set(over)
    for name, area in areas.items():
        for (r, c), v in zip(area.cells(), np.asarray(weights[name]).reshape(-1).tolist()):
            values.setdefault(area.sheet, {})[(r, c)] = OverFormula(v) if (area.sheet, r, c) in over else float(v)
    return values


@dataclass
class TrainedWrite:
    cells_written: int
    recalc: Recalc
    stale: list[str]          # ranges that depend on the parameters but kept their cached values
    stale_inputs: list[str]   # ranges recomputed, but from such stale values


def write_trained(src: Path, dst: Path, wb: Workbook, graph: Graph,
                  values: Mapping[str, Mapping[tuple[int, int], float]], params: Sequence[Area],
                  new_sheets: Sequence[NewSheet] = ()) -> TrainedWrite:
    """Write `dst`: `src` with the parameter cells set to `values`, every formula cell's cached
    value recomputed with them, `new_sheets` appended, and recalculation asked for on open."""
    recalc = recalculate(wb, graph, overrides=values)
    depends = parameter_dependents(graph, params)
    kept = {f for f in recalc.skipped if f in depends}
    tainted = graph.dependents(kept) - kept
    written = write_recalculated(src, dst, wb, graph, recalc, extra=values, new_sheets=new_sheets,
                                 recalc_on_open=True)
    return TrainedWrite(written, recalc, [f"{graph.families[f].area} ({recalc.skipped[f]})" for f in sorted(kept)],
                        [str(graph.families[f].area) for f in sorted(tainted)])
