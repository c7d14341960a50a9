"""eval: recalculate every formula cell and write a copy with the results."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import recalculate_workbook
from ..errors import BadInput
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

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn eval --json` prints."""
        return {"output": str(self.output), "cells_written": self.cells_written, "cells_kept": self.cells_kept,
                "unsupported": self.unsupported, "volatile": self.volatile, "seconds": self.seconds}


def eval_workbook(path: str | os.PathLike[str], output: str | os.PathLike[str],
                  strict: bool = False) -> EvalReport:
    """Recalculate the workbook and write the copy `output`; strict: BadInput (nothing written)
    when a cell uses a function xl2nn does not implement."""
    t0 = time.perf_counter()
    wb, graph, recalc = recalculate_workbook(path)
    missing, volatile, n_missing, n_volatile = recalc.not_recomputed(graph)
    if missing and strict:
        raise BadInput(f"{path}: --strict: {n_missing:,} formula cells use what xl2nn does not implement: "
                       + listing(missing))
    out = Path(output)
    written = write_recalculated(Path(path), out, wb, graph, recalc)
    return EvalReport(out, written, n_missing + n_volatile, missing, volatile, time.perf_counter() - t0)
