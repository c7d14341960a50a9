"""Verification: the compiled graph against the sheet's own numbers, autograd against
finite differences."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .cells import cell_name
from .compiler.grid import Recalc
from .functions.values import NUM
from .compiler.lower import CompiledModel
from .compiler.program import weight_points
from .errors import UnsupportedFormula
from .ir.graph import Graph
from .reader.workbook import Workbook

VALUE_RTOL = 1e-9
VALUE_ATOL = 1e-12     # cells that should be 0 but carry rounding noise, in either engine
GRAD_RTOL = 1e-6


@dataclass
class SheetCheck:
    sheet: str
    checked: int = 0
    failed: int = 0
    skipped: int = 0           # formula cells we could not recompute (unsupported functions)
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst: str = ""
    worst_cached: float | None = None
    worst_got: object = None
    first_failure: str = ""       # the top-left cell that differs, with its formula and both values
    first_formula: str = ""
    first_cached: float | None = None
    first_got: object = None

    @property
    def ok(self) -> bool:
        return self.failed == 0


def kept_cells(graph: Graph, recalc: Recalc) -> set[tuple[str, int, int]]:
    """The cells of the families that kept their cached values (not recomputed)."""
    out: set[tuple[str, int, int]] = set()
    for fid in recalc.skipped:
        fam = graph.families[fid]
        rows, cols = fam.out_cells()
        out.update((fam.sheet, int(r), int(c)) for r, c in zip(rows, cols))
    return out


def check_values(wb: Workbook, recalc: Recalc, skipped_cells: set[tuple[str, int, int]] | None = None,
                 graph: Graph | None = None, sheets: list[str] | None = None) -> list[SheetCheck]:
    """Every formula cell with a cached number, recomputed and compared (all at once: a
    100,000-row sheet has 600,000 of them), on every sheet or on `sheets`. With the graph,
    the first failure's formula is reported too."""
    out = []
    skipped_cells = skipped_cells or set()
    for sheet in wb.sheets.values():
        if sheets is not None and sheet.name not in sheets:
            continue
        chk = SheetCheck(sheet.name)
        rows, cols, _ = sheet.formulas.arrays()
        order = np.lexsort((cols, rows))                 # reading order: the first failure is the top-left one
        rows, cols = rows[order], cols[order]
        cached = sheet.values.numbers_at(rows, cols)
        has = ~np.isnan(cached)
        skip = np.zeros(len(rows), bool)
        mine = [(r, c) for s, r, c in skipped_cells if s == sheet.name]
        if mine:
            skip = np.isin(rows * (1 << 20) + cols, [r * (1 << 20) + c for r, c in mine])
        chk.skipped = int((has & skip).sum())
        take = has & ~skip
        rows, cols, cached = rows[take], cols[take], cached[take]
        chk.checked = len(rows)
        if not chk.checked:
            if chk.skipped:
                out.append(chk)
            continue
        num, kind = recalc.grids.num[sheet.name], recalc.grids.kind[sheet.name]
        got = num[rows, cols]
        is_num = kind[rows, cols] == NUM
        diff = np.where(is_num, np.abs(got - cached), np.inf)
        rel = diff / np.maximum(np.abs(cached), VALUE_ATOL)
        bad = ~(diff <= VALUE_RTOL * np.abs(cached) + VALUE_ATOL)
        chk.failed = int(bad.sum())
        if chk.failed:
            i = int(np.argmax(bad))
            r, c = int(rows[i]), int(cols[i])
            chk.first_failure = cell_name(sheet.name, r, c)
            chk.first_cached, chk.first_got = float(cached[i]), recalc.grids.value(sheet.name, r, c)
            fam = graph.family_at(sheet.name, r, c) if graph is not None else None
            chk.first_formula = _formula(fam, r, c)
        rel = np.nan_to_num(rel, nan=np.inf)
        i = int(np.argmax(rel))
        r, c = int(rows[i]), int(cols[i])
        chk.max_rel, chk.max_abs = float(rel[i]), float(diff[i])
        chk.worst, chk.worst_cached, chk.worst_got = cell_name(sheet.name, r, c), float(cached[i]), \
            recalc.grids.value(sheet.name, r, c)
        out.append(chk)
    return out


def _formula(fam, r: int, c: int) -> str:
    """The cell's formula as Excel shows it: an array formula's cells all show the one formula
    written at its anchor, in braces."""
    if fam is None:
        return ""
    if fam.array is not None:
        return "{" + fam.formula + "}" + (f" (array formula over {fam.array.a1})" if fam.array.size > 1 else "")
    return fam.formula_at(r, c)


@dataclass
class GradCheck:
    parameter: str
    cell: str
    label: str
    autograd: float
    finite_difference: float
    rel: float
    noise: float       # what float64 rounding alone can put into the finite difference
    point: int = 0     # which weight point: 0 the workbook's weights, then perturbations of them

    @property
    def ok(self) -> bool:
        diff = abs(self.autograd - self.finite_difference)
        return diff <= GRAD_RTOL * max(abs(self.autograd), abs(self.finite_difference)) + self.noise


@dataclass
class GradReport:
    objective: float
    checks: list[GradCheck] = field(default_factory=list)
    points: int = 0            # weight points checked (the workbook's and perturbed ones)
    skipped_points: int = 0    # perturbed points where the objective is an error: nothing to check

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def worst(self) -> GradCheck | None:
        return max(self.checks, key=lambda c: c.rel, default=None)


GRAD_POINTS = 3        # the workbook's weights and two perturbations of them
PERTURB = 0.1          # each weight moves by up to ±PERTURB/2 × max(|w|, 1)


def check_gradients(model: CompiledModel, points: int = GRAD_POINTS) -> GradReport:
    """Autograd of the objective vs central differences of the same function, float64, at the
    workbook's weights and at `points - 1` perturbations of them."""
    report = GradReport(objective=math.nan)
    # perturbed points where the objective is an error (or needs an error's code) are skipped
    for k in weight_points(model, points, PERTURB):
        model.zero_grad()
        try:
            y = model()
        except UnsupportedFormula:      # e.g. ISNA of an error met at a perturbed point
            if k == 0:
                raise
            report.skipped_points += 1
            continue
        if k == 0:
            report.objective = float(y.detach())
        elif not (y.requires_grad and math.isfinite(float(y.detach()))):
            report.skipped_points += 1      # an error value there (a lookup out of its table, ...)
            continue
        y.backward()
        try:
            checks = _point_checks(model, k)
        except UnsupportedFormula:
            if k == 0:
                raise
            report.skipped_points += 1
            continue
        report.points += 1
        report.checks += checks
    model()
    return report


def _point_checks(model: CompiledModel, point: int) -> list[GradCheck]:
    grads = {k: p.grad.detach().clone().reshape(-1) for k, p in model.weights.items()}
    eps = torch.finfo(torch.float64).eps
    out = []
    with torch.no_grad():
        for name, p in model.weights.items():
            flat = p.data.view(-1)
            area = model.param_areas[name]
            cells = area.cells()
            for i in range(flat.numel()):
                w = float(flat[i])
                h = 1e-6 * max(1.0, abs(w))
                flat[i] = w + h
                up = float(model())
                flat[i] = w - h
                down = float(model())
                flat[i] = w
                fd = (up - down) / (2 * h)
                a = float(grads[name][i])
                # Each objective value carries rounding of a few eps of its size; divided by 2h
                # that is the floor below which a difference says nothing (it matters at an
                # optimum, where gradients are tiny).
                noise = 16 * eps * max(abs(up), abs(down)) / h
                r, c = cells[i]
                rel = abs(a - fd) / max(abs(a), abs(fd), 1e-300)
                out.append(GradCheck(name, cell_name(area.sheet, r, c), model.param_labels[name][i],
                                     a, fd, rel, noise, point))
    return out


@dataclass
class TraceCheck:
    """The program train runs (and export writes, when wholly traced) against the interpreter."""

    traced: bool
    reason: str = ""           # why not wholly traced: which cells run in the interpreter
    points: int = 0
    max_rel: float = 0.0
    mode: str = "traced"       # traced, mixed (some families interpreted) or interpreted

    @property
    def ok(self) -> bool:
        return self.mode == "interpreted" or self.max_rel <= TRACE_RTOL


TRACE_RTOL = 1e-12
TRACE_POINTS = 4


def check_trace(model: CompiledModel, points: int = TRACE_POINTS) -> TraceCheck:
    from .compiler.program import Program
    program = Program(model)
    if program.mode == "interpreted":
        return TraceCheck(False, program.fallback, mode="interpreted")
    return TraceCheck(program.mode == "traced", program.fallback, points, program.check(points=points), program.mode)


def as_dict(obj) -> dict:
    d = asdict(obj)
    if isinstance(obj, SheetCheck):
        d["ok"] = obj.ok
        for key in ("worst_got", "first_got"):
            v = getattr(obj, key)
            d[key] = v if isinstance(v, (float, int, type(None))) else str(v)
    return d
