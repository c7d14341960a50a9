"""verify: recomputed cells against cached values, autograd against finite differences."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..api import load
from ..compiler.grid import recalculate
from ..compiler.lower import compile_model
from ..compiler.model import ModelSpec, find_model
from ..errors import BadInput
from ..handgrad import HandGradReport, check_hand_gradients, parse_ranges, report_lines
from ..verify import (GRAD_RTOL, VALUE_RTOL, GradReport, SheetCheck, TraceCheck, as_dict, check_gradients,
                      check_trace, check_values)


@dataclass
class VerifyReport:
    ok: bool
    spec: ModelSpec | None                 # None when checking hand-written derivatives
    values: list[SheetCheck]
    gradients: GradReport | None = None    # None with values_only or hand-written derivatives
    trace: TraceCheck | None = None
    hand: HandGradReport | None = None
    n_params: int = 0                      # the model's parameter cells (with gradients)
    value_rtol: float = VALUE_RTOL
    grad_rtol: float = GRAD_RTOL

    def hand_lines(self) -> list[str]:
        """The hand-written derivatives' report, line by line ([] when not checked)."""
        return report_lines(self.hand) if self.hand is not None else []

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn verify --json` prints."""
        spec, grads, trace, hand = self.spec, self.gradients, self.trace, self.hand
        return {
            "ok": self.ok, "objective": spec.objective_name if spec else None,
            "model_note": spec.note if spec else "",
            "values": [as_dict(s) for s in self.values], "value_rtol": self.value_rtol,
            "gradients": None if grads is None else {
                "ok": grads.ok, "objective_value": grads.objective, "rtol": self.grad_rtol,
                "points": grads.points, "skipped_points": grads.skipped_points,
                "checks": [dict(vars(g), ok=g.ok) for g in grads.checks]},
            "trace": None if trace is None else dict(vars(trace), ok=trace.ok),
            "hand_gradients": hand.as_dict() if hand else None,
        }


def verify_workbook(path: str | os.PathLike[str], sheet: str | None = None, params: str | None = None,
                    loss: str | None = None, values_only: bool = False, grad: str | None = None,
                    of: str | None = None, wrt: str | None = None) -> VerifyReport:
    """Check the recomputed cells against the cached values, then either the Solver model's
    gradients (unless values_only) or, given grad/of/wrt, hand-written derivative cells."""
    wb, graph = load(path)
    hand_flags = (grad, of, wrt)
    spec = hand = None
    if any(hand_flags):                     # bad flags fail before the work
        if not all(hand_flags):
            raise BadInput("--grad, --of and --wrt go together, e.g. --grad K4:K33 --of F4:F33 --wrt C4:C33")
        if params or loss or values_only:
            raise BadInput("--grad checks hand-written derivatives; --params, --loss and --values-only belong to "
                           "the Solver-model check: give one or the other")
        areas = parse_ranges(wb, grad, of, wrt, sheet)
    else:
        spec = find_model(wb, sheet, params, loss)
    recalc = recalculate(wb, graph)
    skipped_cells = set()
    for fid in recalc.skipped:
        fam = graph.families[fid]
        rows, cols = fam.out_cells()
        skipped_cells.update((fam.sheet, int(r), int(c)) for r, c in zip(rows, cols))
    sheets = check_values(wb, recalc, skipped_cells)
    grads = trace = None
    n_params = 0
    if spec is None:
        hand = check_hand_gradients(wb, recalc.grids, *areas)
    elif not values_only:
        model = compile_model(wb, graph, spec)      # the workbook is read and parsed once
        grads = check_gradients(model)
        trace = check_trace(model)
        n_params = sum(a.size for a in model.param_areas.values())
    ok = all(s.ok for s in sheets) and (grads is None or grads.ok) and (hand is None or hand.ok) \
        and (trace is None or trace.ok)
    return VerifyReport(ok, spec, sheets, grads, trace, hand, n_params)
