"""Dynamic arrays whose recomputed size is not the size Excel saved.

A legacy (Ctrl+Shift+Enter) array fills the range it was entered over, padding with #N/A
or cutting the result (grid._fit_array). A dynamic array spills exactly its result's size,
and re-spills when that changes: cells outside the saved range would be filled, cells
inside it emptied. xl2nn's families write fixed ranges, so such a result is never written
into the saved range as if it fitted: the cells keep their cached values and say why, or,
where Excel's own answer is known (a one-cell dynamic array whose spill would land on cells
that hold something), they get it: #SPILL!.
"""
from __future__ import annotations

import numpy as np

from ..cells import CellError, a1, cell_name
from ..functions.values import EMPTY, Val, from_objects, to_objects
from ..ir.families import Family
from ..ir.graph import Graph
from ..reader.workbook import Workbook

SPILL = CellError("#SPILL!")


def spill_mismatch(wb: Workbook, fam: Family, v: Val) -> str | None:
    """Why a dynamic array family's result does not fit the range the file saved, else None."""
    sheet = wb.sheets.get(fam.sheet)
    if sheet is None or not sheet.dynamic:
        return None
    h, w = int(v.num.shape[1]), int(v.num.shape[2])
    if fam.array is not None:
        anchor = (fam.array.r1, fam.array.c1)
        if anchor not in sheet.dynamic or (h, w) == fam.array.shape:
            return None
        H, W = fam.array.shape
        return (f"the dynamic array at {cell_name(fam.sheet, *anchor)} spills {h}×{w} now, but the file saved "
                f"it over {H}×{W} ({fam.array}); Excel would re-spill it")
    if (h, w) == (1, 1):
        return None
    dyn = [(int(r), int(c)) for r, c in zip(fam.rows, fam.cols) if (int(r), int(c)) in sheet.dynamic]
    if not dyn:
        return None
    return (f"the dynamic array at {cell_name(fam.sheet, *dyn[0])} spills {h}×{w} now, but the file saved "
            f"it as one cell; Excel would spill it")


def respill(wb: Workbook, graph: Graph, kind: dict[str, np.ndarray], fam: Family, v: Val) -> tuple[Val | None, str | None]:
    """(the value to write, None), or (None, why the cells keep their cached values).

    A one-cell dynamic array that now computes h×w: #SPILL! where a cell of the range it
    would spill into holds a value or a formula (what Excel shows); otherwise Excel would
    spill into empty cells the file does not have, and the cells say so."""
    why = spill_mismatch(wb, fam, v)
    if why is None:
        return v, None
    if fam.array is not None:
        return None, why
    sheet = wb.sheets[fam.sheet]
    h, w = int(v.num.shape[1]), int(v.num.shape[2])
    objs = to_objects(v)[:, :1, :1]
    objs = np.broadcast_to(objs, (len(fam.rows), 1, 1)).copy()
    owner = graph.owners.owner.get(fam.sheet)
    grid = kind.get(fam.sheet)
    for i, (r, c) in enumerate(zip(fam.rows.tolist(), fam.cols.tolist())):
        if (r, c) not in sheet.dynamic:
            continue
        if not _blocked(owner, grid, r, c, h, w):
            return None, (f"the dynamic array at {cell_name(fam.sheet, r, c)} spills {h}×{w} now "
                          f"({a1(r, c)}:{a1(r + h - 1, c + w - 1)}), but the file saved it as one cell; "
                          "Excel would spill it")
        objs[i, 0, 0] = SPILL
    return from_objects(objs, v.num.device), None


def _blocked(owner: np.ndarray | None, kind: np.ndarray | None, r: int, c: int, h: int, w: int) -> bool:
    """Whether any cell of the h×w block at (r, c), the anchor aside, holds a formula or a value."""
    for grid, empty in ((owner, -1), (kind, EMPTY)):
        if grid is None:
            continue
        block = grid[r:r + h, c:c + w]
        busy = block != empty
        if busy.size:
            busy[0, 0] = False
        if busy.any():
            return True
    return False


__all__ = ["respill", "spill_mismatch", "SPILL"]
