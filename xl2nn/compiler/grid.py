"""Whole-workbook recalculation: every family in order, values held in NumPy grids.

This is the engine behind `eval`, `verify` and the cached values written back after
training, and it folds the constant part of a model before lowering.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, Mapping

import numpy as np
import torch

from ..arrays import grown
from ..cells import MAX_COL, MAX_ROW, Area, CellError, CellValue, cell_name
from ..errors import UnsupportedFormula
from ..formula.ast import Ref, refs
from ..functions import FUNCTIONS, VOLATILE
from ..functions.arrays import Ragged
from ..functions.values import BOOL, EMPTY, ERROR, NUM, TEXT, Val, from_objects, to_objects
from ..ir.families import UNPARSABLE, Family, calls
from ..ir.graph import Graph
from ..reader.workbook import CalcSettings, Workbook
from .interpret import EvalContext, evaluate
from .references import Areas, RaggedReference, ReferenceTexts, Where, owners_of, read_grid
from .spill import respill


class Grids:
    """Each sheet's cells as dense arrays; row 0 and column 0 stay empty on purpose
    (out-of-range reads are pointed there)."""

    def __init__(self, wb: Workbook, graph: Graph) -> None:
        self.num: dict[str, np.ndarray] = {}
        self.kind: dict[str, np.ndarray] = {}
        self.text: dict[str, np.ndarray] = {}
        self.texts = ReferenceTexts(wb)         # INDIRECT's text -> cells
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


CIRCULAR = "circular reference"     # how a cycle's families that kept their cached values are listed


@dataclass
class CycleRun:
    """A circular reference computed by iteration, as Excel's iterative calculation does."""
    families: list[int]         # in the order each iteration computes them
    iterations: int
    converged: bool             # the largest change fell under the workbook's delta
    change: float               # the largest change in the last iteration


@dataclass
class Recalc:
    grids: Grids
    skipped: dict[int, str] = field(default_factory=dict)   # family id -> why it kept its cached values
    cycles: list[CycleRun] = field(default_factory=list)    # the circular references iterated
    # family id -> the blocks its computed references (OFFSET, INDIRECT, ...) read
    landed: dict[int, list[Area]] = field(default_factory=dict)

    def circular(self, graph: Graph) -> tuple[dict[str, list[str]], int]:
        """The circular references that kept their cached values: why -> the ranges of their
        cells, and how many cells."""
        out: dict[str, list[str]] = {}
        n = 0
        for fid in sorted(self.skipped, key=lambda f: (graph.families[f].sheet, graph.families[f].area.r1,
                                                         graph.families[f].area.c1)):
            if self.skipped[fid].startswith(CIRCULAR):
                out.setdefault(self.skipped[fid], []).append(str(graph.families[fid].area))
                n += graph.families[fid].size
        return out, n

    def not_recomputed(self, graph: Graph) -> tuple[dict[str, list[str]], dict[str, list[str]], int, int]:
        """The skipped cells by function: (unsupported, volatile, and how many cells each);
        each maps a function name to the ranges of the cells that use it."""
        missing: dict[str, list[str]] = {}
        volatile: dict[str, list[str]] = {}
        counts = [0, 0]
        why: dict[tuple[str, int, int], str] | None = None
        for fid in sorted(self.skipped, key=lambda f: (graph.families[f].sheet, graph.families[f].area.r1,
                                                         graph.families[f].area.c1)):
            if self.skipped[fid].startswith(CIRCULAR):
                continue            # listed by circular()
            fam = graph.families[fid]
            names = unsupported(fam)
            if names == {UNPARSABLE}:   # why each cell's formula could not be read, in the parser's words
                if why is None:
                    why = {(p.sheet, p.row, p.col): p.message for p in graph.problems}
                for r, c in zip(*(a.tolist() for a in fam.out_cells())):
                    missing.setdefault(why.get((fam.sheet, r, c), UNPARSABLE), []).append(cell_name(fam.sheet, r, c))
                counts[0] += fam.size
                continue
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
                overrides: Mapping[str, Mapping[tuple[int, int], float]] | None = None,
                iterate: bool | None = None) -> Recalc:
    """Evaluate families in dependency order (all, or `only`), writing into grids.

    overrides: sheet -> {(row, col): number} for constant cells (e.g. trained parameters)
    that take these values instead of the workbook's before any family is evaluated.
    iterate: whether circular references are iterated (default: as the workbook says,
    wb.calc); those that are not keep their cached values, listed by Recalc.circular.
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
    demand = _Demand(graph)

    def compute(fid: int) -> None:
        fam = graph.families[fid]
        missing = unsupported(fam)
        volatile = missing & VOLATILE
        if missing:
            result.skipped[fid] = ("volatile " + ", ".join(sorted(volatile)) + ": cached values used as a snapshot"
                                   if volatile else "unsupported " + ", ".join(sorted(missing)))
            return
        try:
            with demand.computing(fid):
                val = evaluate_family(fam, grids, device, literals, demand.need)
        except UnsupportedFormula as exc:      # e.g. a TEXT format outside what we implement
            result.skipped[fid] = f"unsupported {exc}"
            return
        except _Unordered as exc:             # a computed reference into a cycle, or back at itself
            result.skipped[fid] = str(exc)
            return
        val, why = respill(wb, graph, grids.kind, fam, val)     # a dynamic array that changed size
        if val is None:
            result.skipped[fid] = why
            return
        grids.write(fam, val)

    demand.compute = compute
    for fid in graph.order:
        if (only is not None and fid not in only) or fid in demand.done:
            continue
        cycle = graph.cycle_of(fid)
        if cycle is not None:
            if fid == next(f for f in cycle if only is None or f in only):    # once per cycle
                _circular(wb, graph, cycle, result, device, literals, iterate)
                demand.done.update(cycle)
            continue
        demand.run(fid)
    result.landed = {f: list(blocks) for f, blocks in demand.landed.items()}
    return result


class _Unordered(Exception):
    """A computed reference lands on cells that cannot be computed before it."""


class _Demand:
    """Families computed when a computed reference (OFFSET, INDIRECT, ...) is about to read
    their cells, if the order did not compute them yet: the graph orders such references by
    where they landed when it was built (compiler/resolve.py), but positions can move (new
    inputs, trained weights). Never a stale value: what cannot be computed first (a cycle)
    leaves the reading family with its cached values, listed."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.done: set[int] = set()
        self.running: list[int] = []
        self.landed: dict[int, dict[Area, None]] = {}
        self.compute = lambda fid: None

    def run(self, fid: int) -> None:
        self.done.add(fid)
        self.compute(fid)

    @contextmanager
    def computing(self, fid: int) -> Iterator[None]:
        self.running.append(fid)
        try:
            yield
        finally:
            self.running.pop()

    def need(self, areas: Areas) -> None:
        me = self.running[-1] if self.running else None
        mine = self.graph.cycle_of(me) if me is not None else None
        if me is not None:
            self.landed.setdefault(me, {}).update(dict.fromkeys(areas.blocks()))
        for owner in sorted(owners_of(areas, self.graph.owners.owners_in)):
            if owner in self.done and owner not in self.running:
                continue
            if mine is not None and owner in mine:      # iterating its own cycle: current values
                continue
            self.ensure(owner)

    def ensure(self, fid: int) -> None:
        """Compute `fid` out of order, its dependencies first; one being computed (the reader
        or what it is computed for) or on a cycle makes this a circular reference."""
        if fid in self.done and fid not in self.running:
            return
        if fid in self.running or self.graph.cycle_of(fid) is not None:
            fam = self.graph.families[fid]
            raise _Unordered(f"{CIRCULAR} through a computed reference (it lands on {fam.area}, which "
                             "cannot be computed before it)")
        for d in sorted(self.graph.families[fid].deps - {fid}):
            self.ensure(d)
        self.run(fid)


def _circular(wb: Workbook, graph: Graph, cycle: list[int], result: Recalc, device: torch.device,
              literals: dict, iterate: bool | None) -> None:
    """A circular reference: iterated as Excel does when the workbook turns iterative calculation
    on (and `iterate` does not say otherwise), else its cells keep their cached values."""
    fams = [graph.families[f] for f in cycle]
    missing = sorted({name for fam in fams for name in unsupported(fam)})
    on = wb.calc.iterate if iterate is None else iterate
    if on and not missing:
        saved = [_cells(result.grids, fam) for fam in fams]
        try:
            result.cycles.append(iterate_cycle(cycle, graph, result.grids, wb.calc, device, literals))
            return
        except UnsupportedFormula as exc:     # e.g. a TEXT format outside what we implement
            missing = [str(exc)]
            for fam, cells in zip(fams, saved):
                _put_cells(result.grids, fam, cells)
    if missing:
        why = f"{CIRCULAR} through {', '.join(missing)}, which xl2nn cannot compute"
    elif wb.calc.iterate:
        why = f"{CIRCULAR}, iterated on each recalculation"     # verify: its cached values are the state
    else:
        why = f"{CIRCULAR}, iterative calculation off"
    for fam in fams:
        names = unsupported(fam)
        volatile = names & VOLATILE
        result.skipped[fam.id] = ((f"volatile {', '.join(sorted(volatile))}: cached values used as a snapshot"
                                   if volatile else f"unsupported {', '.join(sorted(names))}") if names else why)


def iterate_cycle(cycle: list[int], graph: Graph, grids: Grids, calc: CalcSettings, device: torch.device,
                  literals: dict | None = None) -> CycleRun:
    """Excel's iterative calculation of one cycle: from the values the cells hold (the cached
    values: Excel iterates from the current values), each iteration computes every family of
    the cycle once, in order, each reading the others' latest values; it stops once the largest
    change of an iteration is under calc.delta, or after calc.count iterations, keeping the
    last values either way (LibreOffice gives Err:523 instead; tests/test_iterative.py)."""
    fams = [graph.families[f] for f in cycle]
    change = float("inf")
    for k in range(1, calc.count + 1):
        change = 0.0
        for fam in fams:
            before = _cells(grids, fam)
            grids.write(fam, evaluate_family(fam, grids, device, literals))
            change = max(change, _change(before, _cells(grids, fam)))
        if change < calc.delta:
            return CycleRun(list(cycle), k, True, change)
    return CycleRun(list(cycle), calc.count, False, change)


def _cells(grids: Grids, fam: Family) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies of what the family's cells hold: numbers, kinds, texts."""
    rows, cols = fam.out_cells()
    return (grids.num[fam.sheet][rows, cols].copy(), grids.kind[fam.sheet][rows, cols].copy(),
            grids.text[fam.sheet][rows, cols].copy())


def _put_cells(grids: Grids, fam: Family, cells: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    rows, cols = fam.out_cells()
    grids.num[fam.sheet][rows, cols], grids.kind[fam.sheet][rows, cols], grids.text[fam.sheet][rows, cols] = cells


def _change(before: tuple[np.ndarray, np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray, np.ndarray]
            ) -> float:
    """The largest change of a family's cells: numbers (a blank counts as 0, as Excel reads it)
    by how much, anything else 0 if it stayed the same and infinite if it did not."""
    (n0, k0, t0), (n1, k1, t1) = before, after
    k0 = np.where(k0 == EMPTY, NUM, k0)
    same = k0 == k1
    numeric = same & ((k1 == NUM) | (k1 == BOOL))
    other = same & ~numeric & np.array([a == b for a, b in zip(t0.tolist(), t1.tolist())], dtype=bool)
    diff = np.where(numeric, np.abs(np.where(numeric, n1 - n0, 0.0)), np.where(other, 0.0, np.inf))
    return float(diff.max()) if diff.size else 0.0


def evaluate_family(fam: Family, grids: Grids, device: torch.device, literals: dict | None = None,
                    demand: Callable[[Areas], None] | None = None) -> Val:
    """The family's value; `demand` is told the cells a computed reference is about to read."""
    def resolve(ref: Ref) -> Val:
        R, C = grids.index(ref, fam.rows, fam.cols)
        return grids.read(ref.sheet, R, C, device)

    def read(areas: Areas) -> Val:
        if demand is not None:
            demand(areas)
        return read_grid(grids, areas, device)
    where = Where(fam.sheet, fam.rows, fam.cols, read, grids.texts, fam.array)
    ctx = EvalContext(resolve=resolve, device=device, checked=True, literals=literals, where=where)
    with torch.no_grad():
        try:
            return evaluate(fam.ast, ctx)
        except (Ragged, RaggedReference):
            if fam.array is not None or len(fam.rows) == 1:
                raise
    # Copies whose arrays differ in size inside the formula (FILTER keeps different rows in
    # each, OFFSET blocks of different heights): one cell at a time, each cell's value being
    # the first entry (a plain formula's).
    parts = [evaluate_family(Family(fam.id, fam.sheet, fam.rows[i:i + 1], fam.cols[i:i + 1], fam.ast),
                             grids, device, literals, demand) for i in range(len(fam.rows))]
    return from_objects(np.concatenate([to_objects(p)[:, :1, :1] for p in parts]), device)


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


__all__ = ["CIRCULAR", "CycleRun", "Grids", "Recalc", "recalculate", "iterate_cycle", "evaluate_family",
           "ref_index", "error_source"]
