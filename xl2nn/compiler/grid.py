"""Whole-workbook recalculation: every family in order, values held in NumPy grids.

This is the engine behind `eval`, `verify` and the cached values written back after
training, and it folds the constant part of a model before lowering.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ..arrays import grown
from ..cells import MAX_COL, MAX_ROW, CellError, CellValue, cell_name
from ..errors import UnsupportedFormula
from ..formula.ast import Ref, refs
from ..functions import FUNCTIONS, VOLATILE
from ..functions.values import BOOL, EMPTY, ERROR, NUM, TEXT, Val
from ..ir.families import Family, calls
from ..ir.graph import Graph
from ..reader.workbook import Workbook
from .interpret import EvalContext, evaluate


class Grids:
    """Each sheet's cells as dense arrays; row 0 and column 0 stay empty on purpose
    (out-of-range reads are pointed there)."""

    def __init__(self, wb: Workbook, graph: Graph) -> None:
        self.num: dict[str, np.ndarray] = {}
        self.kind: dict[str, np.ndarray] = {}
        self.text: dict[str, np.ndarray] = {}
        for s in wb.sheets.values():
            h, w = graph.owners.shape[s.name]
            h, w = max(h, s.max_row + 1), max(w, s.max_col + 1)
            num = np.zeros((h, w), dtype=np.float64)
            kind = np.full((h, w), EMPTY, dtype=np.int8)
            text = np.empty((h, w), dtype=object)
            rows, cols, numbers = s.values.number_arrays()
            num[rows, cols] = numbers
            kind[rows, cols] = NUM
            for (r, c), v in s.values.other.items():
                _store(num, kind, text, r, c, v)
            self.num[s.name], self.kind[s.name], self.text[s.name] = num, kind, text

    def index(self, ref: Ref, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ref_index(ref, rows, cols, self.num[ref.sheet].shape if ref.sheet in self.num else (1, 1))

    def read(self, sheet: str, R: np.ndarray, C: np.ndarray, device: torch.device) -> Val:
        if sheet not in self.num:
            objs = np.full(R.shape, CellError("#REF!"), dtype=object)
            from ..functions.values import from_objects
            return from_objects(objs, device)
        num, kind, text = self.num[sheet], self.kind[sheet], self.text[sheet]
        h, w = num.shape
        inside = (R >= 0) & (R < h) & (C >= 0) & (C < w)
        if not inside.all():
            R, C = np.where(inside, R, 0), np.where(inside, C, 0)
        at = R * w + C                  # flat positions: np.take gathers several times faster than num[R, C]
        k = np.take(kind.reshape(-1), at)
        t = np.take(text.reshape(-1), at) if bool(((k == TEXT) | (k == ERROR)).any()) else None
        flat = k.reshape(-1)
        uk: int | np.ndarray = int(flat[0]) if flat.size and (flat == flat[0]).all() else k
        return Val(torch.from_numpy(np.take(num.reshape(-1), at)).to(device), uk, t, is_ref=True)

    def write(self, fam: Family, v: Val) -> None:
        rows, cols = fam.out_cells()
        num = v.num.detach().cpu().numpy()
        kinds = v.kinds()
        text = np.broadcast_to(v.text, num.shape) if v.text is not None else None
        if fam.array is not None:
            num, kinds, text = _fit_array(num[0], kinds[0], None if text is None else text[0], fam.array.shape)
            num, kinds = num.reshape(-1), kinds.reshape(-1)
            text = None if text is None else text.reshape(-1)
        else:
            f = len(rows)
            num = np.broadcast_to(num[:, 0, 0], (f,))
            kinds = np.broadcast_to(kinds[:, 0, 0], (f,))
            text = None if text is None else np.broadcast_to(text[:, 0, 0], (f,))
        # A formula is never blank: =A1 of an empty A1 shows 0, a number (COUNT counts it).
        blank = kinds == EMPTY
        if blank.any():
            num, kinds = np.where(blank, 0.0, num), np.where(blank, NUM, kinds)
        self.num[fam.sheet][rows, cols] = num
        self.kind[fam.sheet][rows, cols] = kinds
        self.text[fam.sheet][rows, cols] = text if text is not None else None

    def set_number(self, sheet: str, row: int, col: int, value: float) -> None:
        """Put a number into a (constant) cell, growing the sheet's arrays if the cell lies outside."""
        for grid, fill in ((self.num, 0.0), (self.kind, EMPTY), (self.text, None)):
            grid[sheet] = grown(grid[sheet], row + 1, col + 1, fill)
        self.num[sheet][row, col] = float(value)
        self.kind[sheet][row, col] = NUM
        self.text[sheet][row, col] = None

    def value(self, sheet: str, row: int, col: int) -> CellValue:
        num, kind, text = self.num[sheet], self.kind[sheet], self.text[sheet]
        if row >= num.shape[0] or col >= num.shape[1]:
            return None
        k = kind[row, col]
        if k == NUM:
            return float(num[row, col])
        if k == BOOL:
            return bool(num[row, col])
        if k == EMPTY:
            return None
        if k == ERROR:
            return CellError(text[row, col])
        return text[row, col]


def _store(num: np.ndarray, kind: np.ndarray, text: np.ndarray, r: int, c: int, v: CellValue) -> None:
    if v is None:
        return
    if isinstance(v, bool):
        num[r, c], kind[r, c] = float(v), BOOL
    elif isinstance(v, (int, float)):
        num[r, c], kind[r, c] = float(v), NUM
    elif isinstance(v, CellError):
        num[r, c], kind[r, c], text[r, c] = np.nan, ERROR, v.code
    else:
        num[r, c], kind[r, c], text[r, c] = np.nan, TEXT, str(v)


def _fit_array(num, kinds, text, shape):
    """An array result placed in its range: size-1 dimensions repeat, the rest is #N/A."""
    H, W = shape
    h, w = num.shape
    out_n = np.full((H, W), np.nan)
    out_k = np.full((H, W), ERROR, dtype=np.int8)
    out_t = np.full((H, W), "#N/A", dtype=object)
    rr = np.arange(H) if h > 1 else np.zeros(H, dtype=int)
    cc = np.arange(W) if w > 1 else np.zeros(W, dtype=int)
    ok = (rr[:, None] < h) & (cc[None, :] < w)
    R, C = np.broadcast_to(np.minimum(rr, h - 1)[:, None], (H, W)), np.broadcast_to(np.minimum(cc, w - 1)[None, :], (H, W))
    out_n[ok] = num[R[ok], C[ok]]
    out_k[ok] = kinds[R[ok], C[ok]]
    if text is not None:
        out_t[ok] = text[R[ok], C[ok]]
    else:
        out_t[ok] = None
    return out_n, out_k, out_t


def ref_index(ref: Ref, rows: np.ndarray, cols: np.ndarray, grid_shape: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (F, h, w) of what `ref` reads from each cell (rows[i], cols[i]).

    F is 1 when the reference is absolute: every cell reads the same block.
    """
    if ref.r1_abs and ref.r2_abs and ref.c1_abs and ref.c2_abs:
        rows, cols = rows[:1], cols[:1]
    top, left, bottom, right = ref.bounds(rows, cols)
    top = np.broadcast_to(top, rows.shape)
    left = np.broadcast_to(left, rows.shape)
    h = int(np.max(bottom - top)) + 1 if np.size(bottom) else 1
    w = int(np.max(right - left)) + 1 if np.size(right) else 1
    # Whole columns/rows: cells past the used range are empty; do not materialise them.
    if ref.r2_abs and ref.r2 == MAX_ROW:
        h = max(1, min(h, grid_shape[0] - int(np.min(top))))
    if ref.c2_abs and ref.c2 == MAX_COL:
        w = max(1, min(w, grid_shape[1] - int(np.min(left))))
    R = top[:, None, None] + np.arange(h)[None, :, None]
    C = left[:, None, None] + np.arange(w)[None, None, :]
    return np.broadcast_to(R, (len(rows), h, w)), np.broadcast_to(C, (len(rows), h, w))


def unsupported(fam: Family) -> set[str]:
    return {name for name in calls(fam.ast) if name not in FUNCTIONS}


@dataclass
class Recalc:
    grids: Grids
    skipped: dict[int, str] = field(default_factory=dict)   # family id -> why it kept its cached values

    def not_recomputed(self, graph: Graph) -> tuple[dict[str, list[str]], dict[str, list[str]], int, int]:
        """The skipped cells by function: (unsupported, volatile, and how many cells each);
        each maps a function name to the ranges of the cells that use it."""
        missing: dict[str, list[str]] = {}
        volatile: dict[str, list[str]] = {}
        counts = [0, 0]
        for fid in sorted(self.skipped, key=lambda f: (graph.families[f].sheet, graph.families[f].area.r1,
                                                         graph.families[f].area.c1)):
            fam = graph.families[fid]
            names = unsupported(fam)
            if not names:           # a supported function given what it cannot do (a TEXT format)
                missing.setdefault(self.skipped[fid].removeprefix("unsupported "), []).append(str(fam.area))
                counts[0] += fam.size
                continue
            counts[not (names - VOLATILE)] += fam.size
            for name in sorted(names - VOLATILE) or sorted(names):
                (volatile if name in VOLATILE else missing).setdefault(name, []).append(str(fam.area))
        return dict(sorted(missing.items())), dict(sorted(volatile.items())), counts[0], counts[1]


def recalculate(wb: Workbook, graph: Graph, only: set[int] | None = None,
                device: torch.device | None = None,
                overrides: Mapping[str, Mapping[tuple[int, int], float]] | None = None) -> Recalc:
    """Evaluate families in dependency order (all, or `only`), writing into grids.

    overrides: sheet -> {(row, col): number} for constant cells (e.g. trained parameters)
    that take these values instead of the workbook's before any family is evaluated.
    """
    device = device or torch.device("cpu")
    grids = Grids(wb, graph)
    for sheet, cells in (overrides or {}).items():
        for (r, c), v in cells.items():
            if graph.family_at(sheet, r, c) is not None:
                raise ValueError(f"cannot override formula cell {cell_name(sheet, r, c)}")
            grids.set_number(sheet, r, c, v)
    result = Recalc(grids)
    literals: dict = {}
    for fid in graph.order:
        if only is not None and fid not in only:
            continue
        fam = graph.families[fid]
        missing = unsupported(fam)
        volatile = missing & VOLATILE
        if missing:
            result.skipped[fid] = ("volatile " + ", ".join(sorted(volatile)) + ": cached values used as a snapshot"
                                   if volatile else "unsupported " + ", ".join(sorted(missing)))
            continue
        try:
            val = evaluate_family(fam, grids, device, literals)
        except UnsupportedFormula as exc:      # e.g. a TEXT format outside what we implement
            result.skipped[fid] = f"unsupported {exc}"
            continue
        grids.write(fam, val)
    return result


def evaluate_family(fam: Family, grids: Grids, device: torch.device, literals: dict | None = None) -> Val:
    def resolve(ref: Ref) -> Val:
        R, C = grids.index(ref, fam.rows, fam.cols)
        return grids.read(ref.sheet, R, C, device)
    ctx = EvalContext(resolve=resolve, device=device, checked=True, literals=literals)
    with torch.no_grad():
        return evaluate(fam.ast, ctx)


def error_source(graph: Graph, grids: Grids, sheet: str, row: int, col: int) -> str:
    """Where an error comes from, for a person: the first error cell, its formula, and the
    text it read where it expected a number."""
    sheet, row, col = _first_error(graph, grids, sheet, row, col)
    fam = graph.family_at(sheet, row, col)
    where = cell_name(sheet, row, col)
    if fam is None:
        return f"{where}, which holds {grids.value(sheet, row, col)}"
    text = []
    for ref in refs(fam.ast):
        R, C = grids.index(ref, np.array([row]), np.array([col]))
        kinds = grids.kind.get(ref.sheet)
        for r, c in zip(R.reshape(-1).tolist(), C.reshape(-1).tolist()):
            if kinds is not None and r < kinds.shape[0] and c < kinds.shape[1] and kinds[r, c] == TEXT:
                text.append(f"{cell_name(ref.sheet, r, c)} = {grids.value(ref.sheet, r, c)!r}")
    reads = f"; it reads text where a number belongs: {', '.join(text[:3])}" if text else ""
    formula = fam.formula_at(row, col)
    return f"{where} ({formula}{reads})"


def _first_error(graph: Graph, grids: Grids, sheet: str, row: int, col: int) -> tuple[str, int, int]:
    """Follow an error value back to the first cell that produced it from clean inputs."""
    seen = set()
    while (sheet, row, col) not in seen:
        seen.add((sheet, row, col))
        fam = graph.family_at(sheet, row, col)
        if fam is None:
            break
        nxt = None
        anchor = (row, col) if fam.array is None else (int(fam.rows[0]), int(fam.cols[0]))
        for ref in refs(fam.ast):
            R, C = grids.index(ref, np.array([anchor[0]]), np.array([anchor[1]]))
            if ref.sheet not in grids.kind:
                continue
            kinds = grids.kind[ref.sheet]
            for r, c in zip(R.reshape(-1), C.reshape(-1)):
                if r < kinds.shape[0] and c < kinds.shape[1] and kinds[r, c] == ERROR:
                    nxt = (ref.sheet, int(r), int(c))
                    break
            if nxt:
                break
        if nxt is None:
            break
        sheet, row, col = nxt
    return sheet, row, col


__all__ = ["Grids", "Recalc", "recalculate", "evaluate_family", "ref_index", "error_source"]
