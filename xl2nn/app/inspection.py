"""inspect: the sheets and their computation as layers, the Solver models found, and the
model xl2nn would compile, in full. No model is needed: most sheets have none."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import _ranges, _text, load
from ..cells import Area
from ..compiler.grid import unsupported
from ..compiler.lower import compile_model
from ..compiler.model import ModelSpec, find_model, solver_sheets
from ..describe import Layer, Summary, reading_order, sheet_layers, summarize
from ..errors import BadInput
from ..functions import VOLATILE
from ..ir.graph import Graph, cycle_text
from ..ranges import merge_texts
from ..reader.workbook import Sheet, Workbook

NO_SOLVER = "no Solver model: give --params RANGE --loss CELL to compile one"


@dataclass
class ParamInfo:
    """One parameter range of the model."""
    name: str
    range: str                  # e.g. "nnet!R4:AA5"
    shape: tuple[int, int]      # rows × columns
    labels: list[str]           # per cell, row by row: the nearest text above or left
    rows: list[str] | None = None       # the text header left of each row, when every row has one
    columns: list[str] | None = None    # the text header above each column, when every column has one


@dataclass
class SheetInfo:
    name: str
    formula_cells: int
    layers: list[Layer]         # its formula families in dependency order, named as layers


@dataclass
class SolverInfo:
    """One Excel Solver model (its hidden solver_* names on a sheet)."""
    sheet: str
    objective: str
    sense: str                  # "min", "max" or "value"
    target: float | None
    parameters: list[str]       # the changing cells' ranges
    used: bool = False          # the one shown in full
    problem: str = ""           # why its names could not be read, if they could not


@dataclass
class InspectReport:
    path: str
    sheets: list[SheetInfo]
    solver_models: list[SolverInfo]
    spec: ModelSpec | None                  # the model shown in full, or None
    parameters: list[ParamInfo]
    summary: Summary | None
    no_model: str = ""                      # why no model is shown in full
    volatile: dict[str, list[str]] = field(default_factory=dict)      # function -> merged ranges
    unsupported: dict[str, list[str]] = field(default_factory=dict)   # function -> merged ranges
    circular: list[str] = field(default_factory=list)   # each circular reference's cells
    iteration: str = ""                                 # what becomes of them (the workbook's calcPr)
    dropout: list[str] = field(default_factory=list)    # RAND cells the model reads: fresh in training

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn inspect --json` prints. The top-level network keys (inputs, layers, ...)
        describe the model shown in full; null when there is none."""
        spec, s = self.spec, self.summary
        model = None if spec is None else {
            "source": spec.source, "sheet": spec.sheet, "objective": spec.objective_name,
            "sense": spec.sense, "target": spec.target, "note": spec.note,
            "parameters": [{"name": p.name, "range": p.range, "shape": list(p.shape), "labels": p.labels,
                            "rows": p.rows, "columns": p.columns} for p in self.parameters]}
        return {
            "path": self.path,
            "sheets": [{"name": sh.name, "formula_cells": sh.formula_cells,
                        "layers": [vars(layer) for layer in sh.layers]} for sh in self.sheets],
            "solver_models": [vars(m) for m in self.solver_models],
            "model": model,
            "no_model": self.no_model or None,
            "inputs": s.inputs if s else None,
            "layers": [vars(layer) for layer in s.layers] if s else None,
            "formula_cells": s.formula_cells if s else None,
            "families": s.families if s else None,
            "tensor_ops": s.ops if s else None,
            "not_differentiable": s.flat if s else None,
            "volatile": self.volatile,
            "unsupported": self.unsupported,
            "circular": self.circular, "dropout": self.dropout,
            "circular_computed_as": self.iteration or None,
        }


def inspect_workbook(path: str | os.PathLike[str], sheet: str | None = None,
                     params: str | Sequence[str] | None = None, loss: str | None = None) -> InspectReport:
    """Describe the workbook: every sheet's computation, every Solver model, and the model
    xl2nn would use (the sheet it opens on, or --sheet / --params --loss) compiled in full.
    Without such a model that part is left out and `no_model` says why; a model that is
    there but cannot be compiled is still BadInput, naming why."""
    sheet, params, loss = _text(sheet, "sheet"), _ranges(params, "params"), _text(loss, "loss")
    wb, graph = load(path)
    order = reading_order(graph)
    layers = sheet_layers(graph, order)
    # --sheet narrows the listing to that sheet's layers (every sheet is still named with its count)
    shown = {sh.name for sh in wb.sheets.values() if sheet is None or sh.name.lower() == sheet.lower()}
    sheets = [SheetInfo(sh.name, len(sh.formulas), layers.get(sh.name, []) if sh.name in shown else [])
              for sh in wb.sheets.values()]
    models = _solver_models(wb)
    volatile, missing = _not_computed(graph)
    report = InspectReport(str(path), sheets, models, None, [], None, volatile=volatile, unsupported=missing)
    if graph.cycles:
        report.circular = [cycle_text(graph, c) for c in graph.cycles]
        calc = wb.calc
        report.iteration = (f"iterated from the cached values, as Excel's iterative calculation does (at most "
                            f"{calc.count} iterations, until no cell changes by {calc.delta:g} or more)"
                            if calc.iterate else "iterative calculation is off: kept as their cached values")
    report.no_model = _why_no_model(wb, sheet, params, loss)
    if report.no_model:
        return report
    spec = find_model(wb, sheet, params, loss)
    model = compile_model(wb, graph, spec)
    report.spec, report.summary = spec, summarize(model)
    report.dropout = model.dropout_cells()
    report.parameters = [_param_info(wb.sheets[a.sheet], n, a, model.param_labels[n])
                         for n, a in model.param_areas.items()]
    for m in models:
        m.used = spec.source == "Solver" and m.objective == spec.objective_name
    return report


def _why_no_model(wb: Workbook, sheet: str | None, params: str | None, loss: str | None) -> str:
    """Why no model is shown in full, or "" when find_model should pick one (or say what is
    wrong with what was asked for)."""
    if params or loss:
        return ""
    candidates = solver_sheets(wb)
    if sheet is not None:
        try:
            name = wb.sheet(sheet).name
        except KeyError:
            return ""               # find_model says there is no such sheet
        return "" if name in candidates else f"sheet {name!r} has no Solver model: give --params RANGE " \
            "--loss CELL to compile one"
    if not candidates:
        return NO_SOLVER
    if len(candidates) > 1 and wb.active_sheet not in candidates:
        return (f"Solver models on {', '.join(candidates)}, none on the sheet the workbook opens on "
                f"({wb.active_sheet!r}): pick one with --sheet NAME")
    return ""


def _solver_models(wb: Workbook) -> list[SolverInfo]:
    out = []
    for name in solver_sheets(wb):
        try:
            spec = find_model(wb, name)
        except BadInput as exc:     # listed all the same, with what is wrong with it
            out.append(SolverInfo(name, "", "min", None, [], problem=str(exc)))
            continue
        out.append(SolverInfo(name, spec.objective_name, spec.sense, spec.target, [str(a) for a in spec.params]))
    return out


def _not_computed(graph: Graph) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Cells whose functions are volatile (kept as cached values) or not implemented, by
    function, merged into rectangles."""
    volatile: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for fam in graph.families:
        for name in sorted(unsupported(fam)):
            (volatile if name in VOLATILE else missing).setdefault(name, []).append(str(fam.area))
    return ({k: merge_texts(v) for k, v in sorted(volatile.items())},
            {k: merge_texts(v) for k, v in sorted(missing.items())})


def _param_info(sheet: Sheet, name: str, area: Area, labels: list[str]) -> ParamInfo:
    rows = _headers(sheet, [(r, area.c1) for r in range(area.r1, area.r2 + 1)], 0, -1)
    columns = _headers(sheet, [(area.r1, c) for c in range(area.c1, area.c2 + 1)], -1, 0)
    return ParamInfo(name, str(area), area.shape, labels, rows, columns)


def _headers(sheet: Sheet, starts: list[tuple[int, int]], dr: int, dc: int) -> list[str] | None:
    """The text header of each row (looking left) or column (looking up) of a block: the
    nearest non-empty cell within three, if it is text and not a formula. None unless every
    row (column) has one: a block with half its headers is labelled by its cells instead."""
    out = []
    for r, c in starts:
        found = None
        for k in range(1, 4):
            rr, cc = r + k * dr, c + k * dc
            if rr < 1 or cc < 1:
                break
            v = sheet.values.get((rr, cc))
            if v is None or (isinstance(v, str) and not v.strip()):
                continue
            if isinstance(v, str) and (rr, cc) not in sheet.formulas:
                found = v.strip()
            break
        if found is None:
            return None
        out.append(found)
    return out


__all__ = ["InspectReport", "ParamInfo", "SheetInfo", "SolverInfo", "inspect_workbook"]
