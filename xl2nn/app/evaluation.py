"""eval: recalculate every formula cell and write a copy with the results."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import recalculate_workbook
from ..compiler.grid import CycleRun
from ..ir.graph import Graph, cycle_text
from ..reader.workbook import CalcSettings
from ..errors import BadInput, XlnnError
from ..verify import VALUE_RTOL, SheetCheck, as_dict, check_values, kept_cells
from ..writeback import write_recalculated
from .common import listing


@dataclass
class EvalReport:
    output: Path
    cells_written: int
    cells_kept: int                       # formula cells that kept their cached values
    unsupported: dict[str, list[str]]     # function -> cells, not implemented
    volatile: dict[str, list[str]]        # function -> cells, volatile (a snapshot)
    seconds: float
    # The recomputed cells against the numbers the file held for them: eval never turns a
    # cached number into another number or an error without saying so.
    compared: int = 0                     # formula cells with a cached number, recomputed
    differ: list[SheetCheck] = field(default_factory=list)   # sheets where some differ

    value_rtol: float = VALUE_RTOL
    circular: dict[str, list[str]] = field(default_factory=dict)   # why -> cells of cycles kept cached
    iterated: list[str] = field(default_factory=list)    # each cycle iterated (iterative calculation), how far
    moved: int = 0              # cells an iterated cycle moved (it and what reads it): not compared

    @property
    def disagreements(self) -> int:
        return sum(s.failed for s in self.differ)

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn eval --json` prints."""
        return {"output": str(self.output), "cells_written": self.cells_written, "cells_kept": self.cells_kept,
                "unsupported": self.unsupported, "volatile": self.volatile, "seconds": self.seconds,
                "compared_with_cached": self.compared, "differ_from_cached": self.disagreements,
                "rtol": self.value_rtol, "first_differences": [as_dict(s) for s in self.differ],
                "circular": self.circular, "iterated": self.iterated, "moved_by_iteration": self.moved}


def eval_workbook(path: str | os.PathLike[str], output: str | os.PathLike[str],
                  strict: bool = False) -> EvalReport:
    """Recalculate the workbook and write the copy `output`, comparing each recomputed cell
    with the number the file held for it. strict: nothing written, BadInput when a cell uses
    a function xl2nn does not implement, Disagrees when a recomputed cell differs."""
    t0 = time.perf_counter()
    wb, graph, recalc = recalculate_workbook(path)
    missing, volatile, n_missing, n_volatile = recalc.not_recomputed(graph)
    circular, n_circular = recalc.circular(graph)
    if missing and strict:
        raise BadInput(f"{path}: --strict: {n_missing:,} formula cells use what xl2nn does not implement: "
                       + listing(missing))
    if circular and strict:
        raise BadInput(f"{path}: --strict: {n_circular:,} formula cells are on a circular reference xl2nn does not "
                       "compute: " + listing(circular))
    # Cells an iterated circular reference moved (the cycle's and those computed from them) are
    # not compared: each recalculation moves them, as Excel's does (a counter by its steps).
    moved = graph.dependents({f for run in recalc.cycles for f in run.families})
    skip = kept_cells(graph, recalc) | {(graph.families[f].sheet, int(r), int(c)) for f in moved
                                        for r, c in zip(*graph.families[f].out_cells())}
    checks = check_values(wb, recalc, skip, graph)
    differ = [s for s in checks if not s.ok]
    if differ and strict:
        s = differ[0]
        raise Disagrees(f"{path}: --strict: {sum(d.failed for d in differ):,} recomputed cells differ from the "
                        f"cached values; first {s.first_failure} {s.first_formula}: cached {s.first_cached!r}, "
                        f"recomputed {s.first_got!r}")
    out = Path(output)
    written = write_recalculated(Path(path), out, wb, graph, recalc)
    return EvalReport(out, written, n_missing + n_volatile + n_circular, missing, volatile, time.perf_counter() - t0,
                      sum(s.checked for s in checks), differ, circular=circular,
                      iterated=[iteration_text(graph, run, wb.calc) for run in recalc.cycles],
                      moved=sum(graph.families[f].size for f in moved))


def iteration_text(graph: Graph, run: CycleRun, calc: CalcSettings) -> str:
    """'s!A1, s!B1: 11 iterations, converged (largest change 0.000977 < 0.001)', or how it stopped."""
    n = f"{run.iterations} iteration{'s' if run.iterations != 1 else ''}"
    if run.converged:
        return f"{cycle_text(graph, run.families)}: {n}, converged (largest change {run.change:.3g} < {calc.delta:g})"
    return (f"{cycle_text(graph, run.families)}: stopped after {n} (iterateCount), not converged (largest change "
            f"{run.change:.3g}, iterateDelta {calc.delta:g}); Excel keeps these values too")


class Disagrees(XlnnError):
    """eval --strict: a recomputed cell differs from the file's cached value (exit 1, as a
    failed verification)."""

    exit_code = 1
