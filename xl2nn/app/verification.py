"""verify: recomputed cells against cached values on every sheet, then autograd against finite
differences for every Solver model in the workbook (or the one named), or hand-written
derivative cells against autograd."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pathlib import Path

from ..api import load
from ..compiler.grid import Recalc, recalculate
from ..compiler.lower import compile_model
from ..compiler.model import ModelSpec, find_model, solver_sheets
from ..errors import BadInput
from ..handgrad import HandGradReport, check_hand_gradients, parse_ranges, report_lines
from ..ranges import parse_area
from .declared import Declared, declared_checks
from ..verify import (GRAD_RTOL, VALUE_RTOL, GradReport, SheetCheck, TraceCheck, as_dict, check_gradients,
                      check_trace, check_values, kept_cells)

NO_MODEL = ("no Solver model{where}: no objective's gradients to check; name one with --params RANGE[,RANGE] "
            "--loss CELL")


@dataclass
class ModelCheck:
    """One model's gradient check: autograd against central differences, and the traced
    program against the interpreter."""
    sheet: str
    objective: str                         # the objective cell, e.g. nnet!AH1 (or Solver's text for it)
    spec: ModelSpec | None                 # None when Solver's names cannot be read as a model
    gradients: GradReport | None = None
    trace: TraceCheck | None = None
    n_params: int = 0                      # parameter cells (each with a gradient checked)
    skipped: str = ""                      # why it was not checked (it cannot be compiled)

    @property
    def ok(self) -> bool:
        """A skipped model is not a failure: the report says it was not checked, and why."""
        return bool(self.skipped) or (self.gradients is not None and self.gradients.ok
                                      and (self.trace is None or self.trace.ok))

    def as_dict(self) -> dict[str, Any]:
        spec, grads, trace = self.spec, self.gradients, self.trace
        return {
            "sheet": self.sheet, "objective": self.objective, "source": spec.source if spec else "Solver",
            "sense": spec.sense if spec else None, "note": spec.note if spec else "", "ok": self.ok, "checked": not self.skipped, "skipped": self.skipped or None,
            "parameters": self.n_params, "rtol": GRAD_RTOL,
            "gradients": None if grads is None else {
                "ok": grads.ok, "objective_value": grads.objective, "points": grads.points,
                "skipped_points": grads.skipped_points, "checks": [dict(vars(g), ok=g.ok) for g in grads.checks]},
            "trace": None if trace is None else dict(vars(trace), ok=trace.ok),
        }


@dataclass
class VerifyReport:
    ok: bool
    values: list[SheetCheck]
    models: list[ModelCheck] = field(default_factory=list)
    no_model: str = ""                     # one line when no model was found (gradients not checked)
    not_recomputed: dict[str, list[str]] = field(default_factory=dict)   # function -> ranges kept cached
    hands: list[HandGradReport] = field(default_factory=list)
    values_only: bool = False
    value_rtol: float = VALUE_RTOL
    grad_rtol: float = GRAD_RTOL

    @property
    def unchecked(self) -> list[ModelCheck]:
        """Models found in the workbook that could not be checked (the report says why)."""
        return [m for m in self.models if m.skipped]

    def hand_lines(self) -> list[str]:
        """The hand-written derivatives' reports, line by line ([] when none was checked)."""
        return [line for h in self.hands for line in report_lines(h)]

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn verify --json` prints."""
        return {
            "ok": self.ok, "values": [as_dict(s) for s in self.values], "value_rtol": self.value_rtol,
            "not_recomputed": self.not_recomputed,
            "models": [m.as_dict() for m in self.models], "no_model": self.no_model or None,
            "hand_gradients": [h.as_dict() for h in self.hands],
        }


class WorkbookChecks:
    """One workbook read, parsed and recalculated once, checked piece by piece: a sheet's
    values, a model's gradients, a block of hand-written derivatives (verify runs them all;
    the pytest plugin runs each as a test item)."""

    def __init__(self, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
        self.path, self.root = path, root      # root: where to stop looking for xl2nn.toml (pytest's rootdir)
        self.wb, self.graph = load(path)
        self._recalc: Recalc | None = None

    @property
    def recalc(self) -> Recalc:
        if self._recalc is None:
            # Circular references keep their cached values even where Excel iterates them: each
            # recalculation moves an iterated cell (a counter by its step count), so its cached
            # value is the state the cells reading it are checked from, not a result to check.
            self._recalc = recalculate(self.wb, self.graph, iterate=False)
        return self._recalc

    def sheet_name(self, sheet: str | None) -> str | None:
        """The sheet as the workbook spells it (names are case-insensitive in Excel)."""
        if sheet is None:
            return None
        try:
            return self.wb.sheet(sheet).name
        except KeyError:
            raise BadInput(f"{self.wb.path}: no sheet named {sheet!r}; sheets: {', '.join(self.wb.sheets)}") from None

    def values(self, sheets: list[str] | None = None) -> list[SheetCheck]:
        """Recomputed against cached, every sheet or `sheets` (those with formulas)."""
        return check_values(self.wb, self.recalc, kept_cells(self.graph, self.recalc), self.graph, sheets)

    def not_recomputed(self, sheets: list[str] | None = None) -> dict[str, list[str]]:
        """Function (or circular reference) -> the ranges that kept their cached values
        (unsupported, volatile, or on a cycle)."""
        missing, volatile, _, _ = self.recalc.not_recomputed(self.graph)
        circular, _ = self.recalc.circular(self.graph)
        out: dict[str, list[str]] = {}
        for name, ranges in {**missing, **volatile, **circular}.items():
            mine = [r for r in ranges if sheets is None or _sheet_of(r) in (*sheets, None)]
            if mine:
                out[name] = mine
        return out

    def solver_models(self, sheet: str | None = None) -> list[ModelSpec | ModelCheck]:
        """Every sheet's Solver model, in sheet order (only `sheet`'s when given). Solver names
        that do not make a model (a deleted range: #REF!) come back as a ModelCheck saying so,
        unless the user named that sheet."""
        wb = self.wb
        order = {name: i for i, name in enumerate(wb.sheets)}
        out: list[ModelSpec | ModelCheck] = []
        for name in sorted(set(solver_sheets(wb)), key=order.__getitem__):
            if sheet is not None and name != sheet:
                continue
            try:
                out.append(find_model(wb, name))
            except BadInput as exc:
                if sheet is not None:
                    raise
                text = next((n.text for n in wb.names if n.name.lower() == "solver_opt"
                             and n.sheet_index == wb.sheets[name].index), "?")
                out.append(ModelCheck(name, text.lstrip("="), None, skipped=str(exc)))
        return out

    def model(self, spec: ModelSpec | ModelCheck, must: bool) -> ModelCheck:
        """Compile and check one model. A model found in the workbook that cannot be compiled
        is reported as not checked (with the reason); one the user named (must) is an error."""
        if isinstance(spec, ModelCheck):
            return spec
        try:
            model = compile_model(self.wb, self.graph, spec)
        except BadInput as exc:
            if must:
                raise
            return ModelCheck(spec.sheet, spec.objective_name, spec, skipped=str(exc))
        return ModelCheck(spec.sheet, spec.objective_name, spec, check_gradients(model), check_trace(model),
                          sum(a.size for a in model.param_areas.values()))

    def hand_areas(self, grad: str, of: str, wrt: str, sheet: str | None) -> tuple:
        """The --grad/--of/--wrt ranges, parsed (bad ones fail here, before the work)."""
        return parse_ranges(self.wb, grad, of, wrt, sheet)

    def hand(self, areas: tuple) -> HandGradReport:
        return check_hand_gradients(self.wb, self.recalc.grids, *areas)

    def declared(self) -> list[Declared]:
        """The checks an xl2nn.toml (or pyproject's [tool.xl2nn]) declares for this workbook."""
        return declared_checks(self.path, self.root)


def verify_workbook(path: str | os.PathLike[str], sheet: str | None = None, params: str | None = None,
                    loss: str | None = None, values_only: bool = False, grad: str | None = None,
                    of: str | None = None, wrt: str | None = None) -> VerifyReport:
    """Check the recomputed cells against the cached values (every sheet, or `sheet`), then
    either the model params/loss name, or given grad/of/wrt the hand-written derivative cells,
    or else every Solver model (those on `sheet`) and the checks an xl2nn.toml declares for
    the workbook; values_only: the values alone."""
    checks = WorkbookChecks(path)
    home = checks.sheet_name(sheet)
    hand_flags = (grad, of, wrt)
    specs: list[ModelSpec | ModelCheck] = []
    hand_areas = []
    if any(hand_flags):                     # bad flags fail before the work
        if not all(hand_flags):
            raise BadInput("--grad, --of and --wrt go together, e.g. --grad K4:K33 --of F4:F33 --wrt C4:C33")
        if params or loss or values_only:
            raise BadInput("--grad checks hand-written derivatives; --params, --loss and --values-only belong to "
                           "the Solver-model check: give one or the other")
        hand_areas = [checks.hand_areas(grad, of, wrt, home)]
    elif params or loss:
        specs = [find_model(checks.wb, home, params, loss)]
    elif not values_only:
        specs = checks.solver_models(home)
        for d in checks.declared():
            if home is not None and d.get("sheet") is not None and d.get("sheet").lower() != home.lower():
                continue                        # --sheet narrows the declared checks too
            if d.kind == "model":
                specs.append(declared_model(checks, d, home))
            else:
                hand_areas.append(declared_hand_areas(checks, d, home))
    sheets = [home] if home else None
    report = VerifyReport(True, checks.values(sheets), not_recomputed=checks.not_recomputed(sheets),
                          values_only=values_only)
    report.hands = [checks.hand(areas) for areas in hand_areas]
    explicit = bool(params or loss) or home is not None
    report.models = [checks.model(s, must=explicit) for s in specs]
    if not specs and not any(hand_flags) and not values_only:
        report.no_model = NO_MODEL.format(where=f" on sheet {home!r}" if home else " in this workbook")
    report.ok = all(s.ok for s in report.values) and all(m.ok for m in report.models) \
        and all(h.ok for h in report.hands)
    return report


def _declared(d: Declared, parse):
    """A declared check's ranges; a bad one names the file and entry that declared it."""
    try:
        return parse()
    except BadInput as exc:
        raise BadInput(f"{d.source}: {exc}") from None


def _sheet_of(text: str) -> str | None:
    """The sheet of a range text ("'it''s'!A1:B2" -> "it's"); None if it is not one."""
    area = parse_area(text)
    return area.sheet if area is not None else None


def declared_hand_areas(checks: WorkbookChecks, d: Declared, home: str | None = None) -> tuple:
    """A declared [[grad]] check's ranges, unqualified ones on its sheet (else `home`)."""
    return _declared(d, lambda: checks.hand_areas(d.get("grad"), d.get("of"), d.get("wrt"),
                                                  checks.sheet_name(d.get("sheet")) or home))


def declared_model(checks: WorkbookChecks, d: Declared, home: str | None = None) -> ModelSpec:
    """A declared [[model]]: its parameters and objective, unqualified ones on its sheet (else `home`)."""
    spec = _declared(d, lambda: find_model(checks.wb, checks.sheet_name(d.get("sheet")) or home,
                                           d.get("params"), d.get("loss")))
    spec.source = f"declared in {Path(d.source.split(' [[')[0]).name}"
    return spec


