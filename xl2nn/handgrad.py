"""verify --grad: a sheet's hand-written derivative cells against autograd, row by row.

`--grad K4:K33 --of F4:F33 --wrt C4:C33` checks, for every k, that the number in K(k) is
d F(k) / d C(k). `--grad` and `--wrt` may be R×P blocks, several ranges joined by commas taken
side by side (`--wrt B4:E53,J4:M53` is 50×8): cell (k, j) of --grad is checked against
d of(k, j) / d wrt(k, j), where --of is broadcast over the block as NumPy broadcasts: a column
of R cells (one per row: a backprop sheet's E_total of each SGD step), one cell (for every
--grad cell: a gradient block dL/dW laid out like W), a row of P cells (steps laid out across
columns), or the block's own shape (cell by cell).

Each --wrt cell is made a leaf of the compiled graph (a parameter), even where it holds a
formula: in a teacher's SGD sheet row k's b is row k-1's "new b", and the hand-written de/db of
row k is the partial derivative with that b taken as given. Rows are not assumed independent:
the derivatives of each --of cell are read off its own backward pass (one pass per distinct
--of cell, giving every --wrt entry at once), so a chained sheet (row k's error also depends on
row k-1's b, through row k's a) is checked correctly, and the report says that it is chained.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .cells import Area, cell_name, col_letters, quote_sheet
from .compiler.leaves import cut_loose
from .compiler.grid import Grids
from .compiler.lower import CompiledModel, compile_model
from .compiler.model import ModelSpec, parse_areas
from .errors import BadInput
from .ir.graph import build_graph
from .reader.workbook import Sheet, Workbook

HAND_RTOL = 1e-9
HAND_ATOL = 1e-12     # a derivative that is 0 in one engine and rounding noise in the other

Cell = tuple[str, int, int]        # (sheet, row, column)


@dataclass(frozen=True)
class Block:
    """R×P cells: one range, or several ranges of R rows each taken side by side, left to right
    (`C4:F33,H4:K33` is 30×8: its column 5 is H)."""

    areas: tuple[Area, ...]

    @classmethod
    def of(cls, x: Block | Area | Sequence[Area]) -> Block:
        if isinstance(x, Block):
            return x
        return cls((x,) if isinstance(x, Area) else tuple(x))

    @property
    def shape(self) -> tuple[int, int]:
        return self.areas[0].shape[0], sum(a.shape[1] for a in self.areas)

    def columns(self) -> list[tuple[Area, int]]:
        """(its range, the sheet column) of each of the P block columns, left to right."""
        return [(a, c) for a in self.areas for c in range(a.c1, a.c2 + 1)]

    def cells(self) -> list[list[Cell]]:
        """cells()[k][j]: block cell (k, j)."""
        cols = self.columns()
        return [[(a.sheet, a.r1 + k, c) for a, c in cols] for k in range(self.shape[0])]

    def __str__(self) -> str:
        # 'sgd!B4:E53,J4:M53': the sheet once when every range is on it
        sheets = {a.sheet for a in self.areas}
        if len(sheets) == 1:
            return f"{quote_sheet(self.areas[0].sheet)}!" + ",".join(a.a1 for a in self.areas)
        return ",".join(str(a) for a in self.areas)


@dataclass
class CellCheck:
    row: int                  # the --grad cell's row in the sheet
    grad_cell: str
    of_cell: str
    wrt_cell: str
    cached: float | None      # the --grad cell's value as saved in the file
    recomputed: float | None  # the --grad cell's formula evaluated by xl2nn
    autograd: float
    problem: str = ""         # why the cell fails; empty when it passes
    column: str = ""          # the --grad cell's column letters, e.g. 'W'
    label: str = ""           # the header text above the --grad column, e.g. '∂E/∂w5' ('' when none)

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def rel(self) -> float:
        vals = [v for v in (self.cached, self.recomputed) if v is not None]
        return max((abs(v - self.autograd) / max(abs(v), abs(self.autograd), 1e-300) for v in vals), default=math.inf)

    @property
    def hand(self) -> float | None:
        return self.cached if self.cached is not None else self.recomputed

    def where(self, block: bool) -> str:
        """'row 7' for a column of derivatives; 'row 7, column W (∂E/∂w5)' in a block."""
        if not block:
            return f"row {self.row}"
        return f"row {self.row}, column {self.column}" + (f" ({self.label})" if self.label else "")


@dataclass
class HandGradReport:
    grad: str
    of: str
    wrt: str
    rows: list[CellCheck] = field(default_factory=list)    # every --grad cell, row by row
    chained: tuple[str, str] | None = None    # (an --of cell, another row's --wrt cell it depends on)
    shape: tuple[int, int] = (0, 1)           # R rows × P columns of --grad
    labels: list[str] = field(default_factory=list)        # header of each --grad column ('' when none)
    wrt_columns: list[str] = field(default_factory=list)   # each --wrt column, e.g. 'sgd!C4:C33'
    wrt_labels: list[str] = field(default_factory=list)    # the header above each --wrt column, e.g. 'w5'
    of_columns: list[str] = field(default_factory=list)    # the --of cells of each --grad column, e.g. 'sgd!F4:F33'

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def block(self) -> bool:
        return self.shape[1] > 1

    @property
    def failures(self) -> list[CellCheck]:
        return [r for r in self.rows if not r.ok]

    @property
    def worst(self) -> CellCheck | None:
        return max(self.rows, key=lambda r: r.rel, default=None)

    def column_checks(self) -> list[list[CellCheck]]:
        """The checks of each --grad column, left to right."""
        p = max(self.shape[1], 1)
        return [self.rows[j::p] for j in range(p)]

    def as_dict(self) -> dict:
        cols = [{"column": cs[0].column if cs else "", "label": self.labels[j] if j < len(self.labels) else "",
                 "of": self.of_columns[j] if j < len(self.of_columns) else "",
                 "wrt": self.wrt_columns[j] if j < len(self.wrt_columns) else "",
                 "wrt_label": self.wrt_labels[j] if j < len(self.wrt_labels) else "",
                 "ok": all(c.ok for c in cs), "failures": sum(not c.ok for c in cs),
                 "max_rel": max((c.rel for c in cs), default=0.0)} for j, cs in enumerate(self.column_checks())]
        return {"ok": self.ok, "grad": self.grad, "of": self.of, "wrt": self.wrt, "rtol": HAND_RTOL,
                "atol": HAND_ATOL, "shape": list(self.shape),
                "chained": list(self.chained) if self.chained else None,
                "first_failure": (dict(asdict(self.failures[0]), ok=False) if self.failures else None),
                "columns": cols, "rows": [dict(asdict(r), ok=r.ok) for r in self.rows]}


def parse_ranges(wb: Workbook, grad: str, of: str, wrt: str, sheet: str | None) -> tuple[Block, Area, Block]:
    """The three ranges, unqualified ones on `sheet` (else the sheet the workbook opens on):
    --grad and --wrt as R×P blocks (ranges joined by commas side by side), --of as one range
    that broadcasts over them. One-line errors for anything else."""
    home = sheet or wb.active_sheet or next(iter(wb.sheets))
    if sheet is not None:
        try:
            home = wb.sheet(sheet).name
        except KeyError:
            raise BadInput(f"{wb.path}: no sheet named {sheet!r}; sheets: {', '.join(wb.sheets)}") from None
    g = _side_by_side(wb, "--grad", grad, home)
    w = _side_by_side(wb, "--wrt", wrt, home)
    areas = parse_areas(wb, of, home, "--of")
    if len(areas) != 1:
        raise BadInput(f"{wb.path}: --of {of!r} must be one range, e.g. F4:F33 (a cell per row) or F1 (one cell)")
    o = areas[0]
    if g.shape != w.shape:
        raise BadInput(f"{wb.path}: --grad {g} ({_shape(g.shape)}) and --wrt {w} ({_shape(w.shape)}) must have "
                       "the same shape: cell (k, j) of --grad is d --of / d cell (k, j) of --wrt")
    _check_of_fits(wb, g, o)
    seen: dict[Cell, None] = {}
    for cell in (c for row in w.cells() for c in row):
        if cell in seen:
            raise BadInput(f"{wb.path}: --wrt {w} names {cell_name(*cell)} twice; each --wrt cell is one leaf")
        seen[cell] = None
    return g, o, w


def _side_by_side(wb: Workbook, flag: str, text: str, home: str) -> Block:
    areas = parse_areas(wb, text, home, flag)
    heights = {a.shape[0] for a in areas}
    if len(heights) != 1:
        parts = ", ".join(f"{a} has {a.shape[0]}" for a in areas)
        raise BadInput(f"{wb.path}: {flag} {text!r}: ranges joined by commas are taken side by side and must "
                       f"have the same number of rows ({parts})")
    return Block(tuple(areas))


def _check_of_fits(wb: Workbook, grad: Block, of: Area) -> None:
    """--of broadcasts over the R×P block: each of its dimensions is the block's or 1."""
    (r, p), (h, w) = grad.shape, of.shape
    if h in (r, 1) and w in (p, 1):
        return
    fits = dict.fromkeys([f"{r}×1 (one cell per row)", "1×1 (one cell for all)", f"1×{p} (one cell per column)",
                          f"{r}×{p} (one cell per --grad cell)"])
    if p == 1:
        fits = dict.fromkeys(list(fits)[:2])
    options = list(fits)
    raise BadInput(f"{wb.path}: --of {of} ({_shape(of.shape)}) does not fit --grad {grad} ({_shape(grad.shape)}): "
                   f"give {', '.join(options[:-1])} or {options[-1]}")


def _shape(shape: tuple[int, int]) -> str:
    h, w = shape
    return f"{h}×{w}"


def compile_with_leaves(wb: Workbook, grids: Grids, leaves: Area | Sequence[Area],
                        roots: Area | Sequence[Cell]) -> CompiledModel:
    """A compiled model whose parameters are the `leaves` ranges and which computes every cell of `roots`.

    The --wrt cells may hold formulas (an SGD sheet's b = the previous row's new b); compile_model
    wants plain numbers there. So the model is compiled from a copy of the workbook in which those
    cells are cut loose: each holds its recalculated value (every other value stays as it was).
    Every cell of `roots` is an output of the model.
    """
    leaf_areas = [leaves] if isinstance(leaves, Area) else list(leaves)
    cells = ([(roots.sheet, r, c) for r, c in roots.cells()] if isinstance(roots, Area) else list(roots))
    for s, r, c in cells:
        v = grids.value(s, r, c)
        if (r, c) not in wb.sheets[s].formulas:
            raise BadInput(f"{wb.path}: --of cell {cell_name(s, r, c)} is not a formula; it must "
                           "compute the quantity differentiated")
        if not isinstance(v, float):
            raise BadInput(f"{wb.path}: --of cell {cell_name(s, r, c)} is {v}, not a number")
    wb2 = cut_loose(wb, grids, leaf_areas, "--wrt", "differentiate with respect to cells outside it", blanks=True)
    spec = ModelSpec(sheet=cells[0][0], objective=cells[0], params=leaf_areas, source="--wrt")
    return compile_model(wb2, build_graph(wb2), spec, must_reach=False, outputs=cells[1:])


def check_hand_gradients(wb: Workbook, grids: Grids, grad: Block | Area, of: Area,
                         wrt: Block | Area) -> HandGradReport:
    """Cell (k, j) of --grad: autograd of of[k, j] (broadcast) with respect to wrt[k, j] (every
    --wrt cell a leaf) against the --grad cell's cached value and its recomputed value.
    One backward pass per distinct --of cell, each giving the derivatives it is checked for."""
    grad_b, wrt_b = Block.of(grad), Block.of(wrt)
    _check_of_fits(wb, grad_b, of)
    if grad_b.shape != wrt_b.shape:
        raise BadInput(f"{wb.path}: --grad {grad_b} ({_shape(grad_b.shape)}) and --wrt {wrt_b} "
                       f"({_shape(wrt_b.shape)}) must have the same shape")
    n_rows, n_cols = grad_b.shape
    oh, ow = of.shape
    of_cells = [(of.sheet, r, c) for r, c in of.cells()]
    model = compile_with_leaves(wb, grids, wrt_b.areas, of_cells)
    # Where each --wrt cell sits in the leaves' gradients, flattened and joined in area order.
    leaves, offset, flat = [], 0, {}
    for area in wrt_b.areas:
        name = next(n for n, a in model.param_areas.items() if a == area)
        leaves.append(model.weights[name])
        h, w = area.shape
        for r, c in area.cells():
            flat[(area.sheet, r, c)] = offset + (r - area.r1) * w + (c - area.c1)
        offset += area.size
    grad_cells, wrt_cells = grad_b.cells(), wrt_b.cells()
    # The block cells each --of cell is checked for (broadcast: a dimension of 1 repeats).
    pairs: dict[Cell, list[tuple[int, int]]] = {cell: [] for cell in of_cells}
    for k in range(n_rows):
        for j in range(n_cols):
            pairs[(of.sheet, of.r1 + (k if oh > 1 else 0), of.c1 + (j if ow > 1 else 0))].append((k, j))
    model.zero_grad()
    model()
    autograd: dict[tuple[int, int], float] = {}
    chained: tuple[str, str] | None = None
    zero = torch.zeros(offset, dtype=torch.float64)
    outs = {cell: model.value(cell_name(*cell)) for cell in of_cells}
    last = max((i for i, cell in enumerate(of_cells) if outs[cell].requires_grad), default=-1)
    for i, cell in enumerate(of_cells):
        out = outs[cell]
        g = zero
        if out.requires_grad:            # else the cell does not depend on any --wrt cell
            gs = torch.autograd.grad(out, leaves, retain_graph=i < last, allow_unused=True)
            g = torch.cat([zero[:lf.numel()] if x is None else x.detach().reshape(-1) for x, lf in zip(gs, leaves)])
        own = [flat[wrt_cells[k][j]] for k, j in pairs[cell]]
        for (k, j), idx in zip(pairs[cell], own):
            autograd[(k, j)] = float(g[idx])
        if chained is None:              # does it also depend on a --wrt cell it is not checked against?
            others = torch.nonzero(g).reshape(-1).tolist()
            mine = set(own)
            hit = next((x for x in others if x not in mine), None)
            if hit is not None:
                other = next(c for c, x in flat.items() if x == hit)
                chained = (cell_name(*cell), cell_name(*other))
    labels = [_header(wb.sheets[a.sheet], a.r1, c) for a, c in grad_b.columns()]
    of_cols = [Area(of.sheet, of.r1, of.c1 + (j if ow > 1 else 0), of.r2, of.c1 + (j if ow > 1 else 0))
               for j in range(n_cols)]
    report = HandGradReport(str(grad_b), str(of), str(wrt_b), chained=chained, shape=grad_b.shape, labels=labels,
                            wrt_columns=[str(Area(a.sheet, a.r1, c, a.r2, c)) for a, c in wrt_b.columns()],
                            wrt_labels=[_header(wb.sheets[a.sheet], a.r1, c) for a, c in wrt_b.columns()],
                            of_columns=[str(a) for a in of_cols])
    for k in range(n_rows):
        for j in range(n_cols):
            gsheet, gr, gc = grad_cells[k][j]
            o = (of.sheet, of.r1 + (k if oh > 1 else 0), of.c1 + (j if ow > 1 else 0))
            cached = wb.sheets[gsheet].values.get((gr, gc))
            got = grids.value(gsheet, gr, gc)
            check = CellCheck(row=gr, grad_cell=cell_name(gsheet, gr, gc), of_cell=cell_name(*o),
                              wrt_cell=cell_name(*wrt_cells[k][j]), cached=_num(cached), recomputed=_num(got),
                              autograd=autograd[(k, j)], column=col_letters(gc), label=labels[j])
            check.problem = _problem(check, cached, got)
            report.rows.append(check)
    return report


def _header(sheet: Sheet, first_row: int, col: int) -> str:
    """The header of a column of cells: the nearest text (not a formula) above its first cell,
    up to 3 rows up (as Sheet.label looks), e.g. '∂E/∂w5'; '' when there is none."""
    for r in range(first_row - 1, max(0, first_row - 4), -1):
        v = sheet.values.get((r, col))
        if isinstance(v, str) and v.strip() and (r, col) not in sheet.formulas:
            return v.strip()
    return ""


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _problem(check: CellCheck, cached: object, got: object) -> str:
    a = check.autograd
    if check.cached is None and check.recomputed is None:
        shown = cached if cached is not None else got
        return f"{check.grad_cell} holds {'nothing' if shown is None else repr(str(shown))}, not a number"
    for what, v in (("holds", check.cached), ("recomputes to", check.recomputed)):
        if v is not None and not abs(v - a) <= HAND_RTOL * max(abs(v), abs(a)) + HAND_ATOL:
            return f"{check.grad_cell} {what} {v:.10g}, autograd d {check.of_cell} / d {check.wrt_cell} = {a:.10g}"
    return ""


def _local(name: str, context: str) -> str:
    """'sgd!C4:C33' as 'C4:C33' when the report's ranges are all on that sheet."""
    sheet, _, ref = name.rpartition("!")
    return ref if context.startswith(sheet + "!") and context.count("!") == 1 else name


def report_lines(r: HandGradReport, table_rows: int = 40) -> list[str]:
    """verify's text report: a summary line; for a column of derivatives every row when there
    are few (else the failures), for a block one line per column and then the failures."""
    n_rows, n_cols = r.shape
    size = f"{n_rows} rows" + (f" × {n_cols} columns" if r.block else "")
    lines = [f"hand-written derivatives {r.grad} = d {r.of} / d {r.wrt}, row by row "
             f"(autograd, each --wrt cell a leaf; fail above rel {HAND_RTOL:g})"]
    bad, worst = r.failures, r.worst
    if not bad and worst is not None:
        lines.append(f"  ok   {size}  max rel {worst.rel:.3g}  worst {worst.where(r.block)}: "
                     f"{worst.grad_cell} = {worst.hand:.10g}, autograd {worst.autograd:.10g}")
    elif bad:
        what = f"{len(bad)} of {len(r.rows)} {'cells' if r.block else 'rows'} differ"
        if r.block:
            what += f" (in {len({c.row for c in bad})} of {n_rows} rows)"
        lines.append(f"  FAIL {what}; first: {bad[0].where(r.block)}: {bad[0].problem}")
    if r.block:
        width = max([len(x) for x in r.labels] + [6])
        against = [f"d {_local(r.of_columns[j], r.of)} / d {_local(r.wrt_columns[j], r.wrt)}"
                   + (f" ({r.wrt_labels[j]})" if r.wrt_labels[j] else "") for j in range(n_cols)]
        wide = max(len(x) for x in against)
        lines.append(f"       {'column':<7} {'header':<{width}}  {'autograd':<{wide}}  max rel")
        for j, cs in enumerate(r.column_checks()):
            nbad = sum(not c.ok for c in cs)
            rel = max((c.rel for c in cs), default=0.0)
            lines.append(f"       {cs[0].column:<7} {r.labels[j] or '-':<{width}}  {against[j]:<{wide}}  "
                         f"{rel:<10.3g} " + ("ok" if not nbad else f"FAIL {nbad} row{'s' * (nbad != 1)}"))
        shown = bad[:10]
    else:
        shown = r.rows if len(r.rows) <= table_rows else bad[:10]
    if shown:
        lines.append(f"       {'row':<6} " + (f"{'column':<7} " if r.block else "") + f"{'hand-written':<20} autograd")
        for c in shown:
            text = f"{c.hand:.12g}" if c.hand is not None else "-"
            lines.append(f"       {c.row:<6} " + (f"{c.column:<7} " if r.block else "")
                         + f"{text:<20} {c.autograd:<20.12g} {'ok' if c.ok else 'FAIL'}")
    if r.chained:
        lines.append(f"  note the rows are chained ({r.chained[0]} also depends on {r.chained[1]} through other "
                     "cells): each row's derivative is the partial one, the other --wrt cells held fixed")
    return lines
