"""Spreadsheet math checked in a user's own tests.

    from xl2nn.testing import assert_workbook

    def test_my_mlp_sheet():
        assert_workbook("mlp.xlsx")                       # values, Solver models, declared checks
        assert_workbook("backprop.xlsx", grad="T4:AA53", of="S4:S53", wrt="C4:J53")

Each raises AssertionError naming the cell, its formula and both numbers, the message the
pytest plugin (`pytest --xl2nn PATH`) prints for the same failure.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app.verification import ModelCheck, VerifyReport
    from .handgrad import HandGradReport
    from .verify import SheetCheck

__all__ = ["assert_workbook", "failure_lines", "sheet_failure", "model_failure", "hand_failure"]


def assert_workbook(path: str | os.PathLike[str], sheet: str | None = None, *, params: str | None = None,
                    loss: str | None = None, values_only: bool = False, grad: str | None = None,
                    of: str | None = None, wrt: str | None = None) -> VerifyReport:
    """`xl2nn verify` as an assertion: every formula cell's recomputed value equals its cached
    one (rel 1e-9), and autograd agrees with finite differences for every Solver model (or the
    params/loss model), or with the hand-written derivatives grad = d of / d wrt. Returns the
    report when all pass; raises AssertionError with every failure, one line each."""
    from .app.verification import verify_workbook
    report = verify_workbook(path, sheet, params, loss, values_only=values_only, grad=grad, of=of, wrt=wrt)
    problems = failure_lines(report) + [f"model {m.objective} could not be checked: {m.skipped}"
                                        for m in report.unchecked]
    if problems:
        raise AssertionError(f"{os.fspath(path)}: " + "\n".join(problems))
    return report


def failure_lines(report: VerifyReport) -> list[str]:
    """What failed, one line per failed check."""
    return [sheet_failure(s) for s in report.values if not s.ok] + \
        [model_failure(m) for m in report.models if not m.ok] + \
        [hand_failure(h) for h in report.hands if not h.ok]


def sheet_failure(s: SheetCheck) -> str:
    more = f" (and {s.failed - 1:,} more cells of {s.checked:,} differ)" if s.failed > 1 else ""
    return (f"{s.first_failure} {s.first_formula}: cached {s.first_cached!r}, recomputed {s.first_got!r}"
            f"{more}")


def model_failure(m: ModelCheck) -> str:
    grads, trace = m.gradients, m.trace
    bad = [g for g in grads.checks if not g.ok] if grads else []
    if bad:
        g = max(bad, key=lambda g: g.rel)
        return (f"gradient of {m.objective} with respect to {g.cell} ({g.label}) at weight point {g.point}: "
                f"autograd {g.autograd:.10g}, finite difference {g.finite_difference:.10g} "
                f"({len(bad)} of {len(grads.checks)} gradients differ)")
    if trace is not None and not trace.ok:
        return (f"the traced program of {m.objective} differs from the interpreter by rel {trace.max_rel:.3g} "
                f"(a bug of xl2nn's: please report it)")
    return f"model {m.objective}: not checked"


def hand_failure(h: HandGradReport) -> str:
    bad = h.failures
    return (f"hand-written derivatives {h.grad}: {len(bad)} of {len(h.rows)} differ; first: "
            f"{bad[0].where(h.block)}: {bad[0].problem}")
