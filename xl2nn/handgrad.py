"""verify --grad: a sheet's hand-written derivative cells against autograd, row by row.

`--grad K4:K33 --of F4:F33 --wrt C4:C33` checks, for every k, that the number in K(k) is
d F(k) / d C(k). Each --wrt cell is made a leaf of the compiled graph (a parameter), even
where it holds a formula: in a teacher's SGD sheet row k's b is row k-1's "new b", and the
hand-written de/db of row k is the partial derivative with that b taken as given. Rows are
not assumed independent: the derivative of row k is read off its own backward pass, so a
chained sheet (row k's error also depends on row k-1's b, through row k's a) is checked
correctly, and the report says that the rows are chained.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import torch

from .cells import Area, cell_name
from .compiler.grid import Grids
from .compiler.lower import CompiledModel, compile_model
from .compiler.model import ModelSpec, parse_areas
from .errors import BadInput
from .ir.graph import build_graph
from .reader.workbook import Workbook

HAND_RTOL = 1e-9
HAND_ATOL = 1e-12     # a derivative that is 0 in one engine and rounding noise in the other


@dataclass
class RowCheck:
    row: int                  # the --grad cell's row in the sheet
    grad_cell: str
    of_cell: str
    wrt_cell: str
    cached: float | None      # the --grad cell's value as saved in the file
    recomputed: float | None  # the --grad cell's formula evaluated by xl2nn
    autograd: float
    problem: str = ""         # why the row fails; empty when it passes

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def rel(self) -> float:
        vals = [v for v in (self.cached, self.recomputed) if v is not None]
        return max((abs(v - self.autograd) / max(abs(v), abs(self.autograd), 1e-300) for v in vals), default=math.inf)


@dataclass
class HandGradReport:
    grad: str
    of: str
    wrt: str
    rows: list[RowCheck] = field(default_factory=list)
    chained: tuple[str, str] | None = None    # (an --of cell, another row's --wrt cell it depends on)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failures(self) -> list[RowCheck]:
        return [r for r in self.rows if not r.ok]

    @property
    def worst(self) -> RowCheck | None:
        return max(self.rows, key=lambda r: r.rel, default=None)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "grad": self.grad, "of": self.of, "wrt": self.wrt, "rtol": HAND_RTOL,
                "atol": HAND_ATOL, "chained": list(self.chained) if self.chained else None,
                "first_failure": (asdict(self.failures[0]) if self.failures else None),
                "rows": [dict(asdict(r), ok=r.ok) for r in self.rows]}


def parse_ranges(wb: Workbook, grad: str, of: str, wrt: str, sheet: str | None) -> tuple[Area, Area, Area]:
    """The three ranges, unqualified ones on `sheet` (else the sheet the workbook opens on);
    one-line errors for anything that is not one block of cells or differs in shape."""
    home = sheet or wb.active_sheet or next(iter(wb.sheets))
    if sheet is not None:
        try:
            home = wb.sheet(sheet).name
        except KeyError:
            raise BadInput(f"{wb.path}: no sheet named {sheet!r}; sheets: {', '.join(wb.sheets)}") from None
    out = []
    for flag, text in (("--grad", grad), ("--of", of), ("--wrt", wrt)):
        areas = parse_areas(wb, text, home, flag)
        if len(areas) != 1:
            raise BadInput(f"{wb.path}: {flag} {text!r} must be one range, e.g. K4:K33")
        out.append(areas[0])
    shapes = [a.shape for a in out]
    if len(set(shapes)) != 1:
        raise BadInput(f"{wb.path}: --grad {out[0]} ({_shape(out[0])}), --of {out[1]} ({_shape(out[1])}) and "
                       f"--wrt {out[2]} ({_shape(out[2])}) must have the same shape: cell k of each is row k")
    return out[0], out[1], out[2]


def _shape(a: Area) -> str:
    h, w = a.shape
    return f"{h}×{w}"


def compile_with_leaves(wb: Workbook, grids: Grids, leaves: Area, roots: Area) -> CompiledModel:
    """A compiled model whose parameter is `leaves` and which computes every cell of `roots`.

    The --wrt cells may hold formulas (an SGD sheet's b = the previous row's new b); compile_model
    wants plain numbers there. So the model is compiled from a copy of the workbook in which those
    cells are cut loose: each holds its recalculated value (every other value stays as it was).
    Every cell of `roots` is an output of the model.
    """
    sheet = wb.sheets[leaves.sheet]
    for area, _ in sheet.arrays:
        if any(area.contains(r, c) for r, c in leaves.cells()):
            raise BadInput(f"{wb.path}: --wrt {leaves} reaches into the array formula {area}; "
                           "differentiate with respect to cells outside it")
    for r, c in roots.cells():
        v = grids.value(roots.sheet, r, c)
        if (r, c) not in wb.sheets[roots.sheet].formulas:
            raise BadInput(f"{wb.path}: --of cell {cell_name(roots.sheet, r, c)} is not a formula; it must "
                           "compute the quantity differentiated")
        if not isinstance(v, float):
            raise BadInput(f"{wb.path}: --of cell {cell_name(roots.sheet, r, c)} is {v}, not a number")
    cut = dataclasses.replace(sheet, formulas=sheet.formulas.copy(), values=sheet.values.copy())
    for r, c in leaves.cells():
        cut.formulas.pop((r, c), None)
        v = grids.value(leaves.sheet, r, c)
        if v is not None:
            cut.values[(r, c)] = v
    sheets = {name: cut if name == cut.name else sh for name, sh in wb.sheets.items()}
    wb2 = dataclasses.replace(wb, sheets=sheets)
    cells = [(roots.sheet, r, c) for r, c in roots.cells()]
    spec = ModelSpec(sheet=roots.sheet, objective=cells[0], params=[leaves], source="--wrt")
    return compile_model(wb2, build_graph(wb2), spec, must_reach=False, outputs=cells[1:])


def check_hand_gradients(wb: Workbook, grids: Grids, grad: Area, of: Area, wrt: Area) -> HandGradReport:
    """Row k: autograd of of[k] with respect to wrt[k] (every --wrt cell a leaf) against grad[k]'s
    cached value and its recomputed value."""
    of_cells, wrt_cells, grad_cells = of.cells(), wrt.cells(), grad.cells()
    model = compile_with_leaves(wb, grids, wrt, of)
    leaf, = model.weights.values()
    model.zero_grad()
    model()
    outs = [model.value(cell_name(of.sheet, r, c)) for r, c in of_cells]
    jac = _jacobian_rows(outs, leaf)
    report = HandGradReport(str(grad), str(of), str(wrt))
    sheet = wb.sheets[grad.sheet]
    for k, ((gr, gc), (orow, ocol), (wr, wc)) in enumerate(zip(grad_cells, of_cells, wrt_cells)):
        a = float(jac[k][k])
        cached = sheet.values.get((gr, gc))
        got = grids.value(grad.sheet, gr, gc)
        check = RowCheck(row=gr, grad_cell=cell_name(grad.sheet, gr, gc), of_cell=cell_name(of.sheet, orow, ocol),
                         wrt_cell=cell_name(wrt.sheet, wr, wc), cached=_num(cached), recomputed=_num(got),
                         autograd=a)
        check.problem = _problem(check, cached, got)
        report.rows.append(check)
        if report.chained is None:
            others = torch.nonzero(jac[k]).reshape(-1).tolist()
            j = next((j for j in others if j != k), None)
            if j is not None:
                report.chained = (check.of_cell, cell_name(wrt.sheet, *wrt_cells[j]))
    return report


def _jacobian_rows(outs: list[torch.Tensor], leaf: torch.Tensor) -> list[torch.Tensor]:
    """d outs[k] / d leaf (flattened) for every k: one backward pass per output, since the
    outputs may share leaves (a chained sheet) and only row k's own entry is wanted of each."""
    zero = torch.zeros(leaf.numel(), dtype=torch.float64)
    rows = []
    last = max((k for k, o in enumerate(outs) if o.requires_grad), default=-1)
    for k, out in enumerate(outs):
        if not out.requires_grad:        # the cell does not depend on any --wrt cell
            rows.append(zero)
            continue
        g, = torch.autograd.grad(out, leaf, retain_graph=k < last, allow_unused=True)
        rows.append(zero if g is None else g.detach().reshape(-1))
    return rows


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _problem(check: RowCheck, cached: object, got: object) -> str:
    a = check.autograd
    if check.cached is None and check.recomputed is None:
        shown = cached if cached is not None else got
        return f"{check.grad_cell} holds {'nothing' if shown is None else repr(str(shown))}, not a number"
    for what, v in (("holds", check.cached), ("recomputes to", check.recomputed)):
        if v is not None and not abs(v - a) <= HAND_RTOL * max(abs(v), abs(a)) + HAND_ATOL:
            return f"{check.grad_cell} {what} {v:.10g}, autograd d {check.of_cell} / d {check.wrt_cell} = {a:.10g}"
    return ""


def report_lines(r: HandGradReport, table_rows: int = 40) -> list[str]:
    """verify's text report: a summary line, every row when there are few, else the failures."""
    lines = [f"hand-written derivatives {r.grad} = d {r.of} / d {r.wrt}, row by row "
             f"(autograd, each --wrt cell a leaf; fail above rel {HAND_RTOL:g})"]
    bad, worst = r.failures, r.worst
    if not bad and worst is not None:
        hand = worst.cached if worst.cached is not None else worst.recomputed
        lines.append(f"  ok   {len(r.rows)} rows  max rel {worst.rel:.3g}  worst row {worst.row}: "
                     f"{worst.grad_cell} = {hand:.10g}, autograd {worst.autograd:.10g}")
    elif bad:
        lines.append(f"  FAIL {len(bad)} of {len(r.rows)} rows differ; first: row {bad[0].row}: {bad[0].problem}")
    shown = r.rows if len(r.rows) <= table_rows else bad[:10]
    if shown:
        lines.append(f"       {'row':<6} {'hand-written':<20} autograd")
        for row in shown:
            hand = row.cached if row.cached is not None else row.recomputed
            text = f"{hand:.12g}" if hand is not None else "-"
            lines.append(f"       {row.row:<6} {text:<20} {row.autograd:<20.12g} {'ok' if row.ok else 'FAIL'}")
    if r.chained:
        lines.append(f"  note the rows are chained ({r.chained[0]} also depends on {r.chained[1]} through other "
                     "cells): each row's derivative is the partial one, the other --wrt cells held fixed")
    return lines
