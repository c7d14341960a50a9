"""export and import-weights: the model out as PyTorch files, trained weights back in."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import compile_workbook
from ..cells import CellValue
from ..export import export, write_weights
from .common import workbook_output


@dataclass
class ExportReport:
    files: list[Path]
    objective: str                 # the objective cell's name
    parameters: dict[str, str]     # name -> range

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn export --json` prints."""
        return {"files": [str(f) for f in self.files], "objective": self.objective,
                "parameters": self.parameters}


def export_model(path: str | os.PathLike[str], output: str | os.PathLike[str], sheet: str | None = None,
                 params: str | Sequence[str] | None = None, loss: str | None = None) -> ExportReport:
    """Write the compiled model in the format `output`'s suffix names (.py, .pt, .safetensors, .onnx)."""
    c = compile_workbook(path, sheet, params, loss)
    files = export(c.model, Path(output), str(path))
    names = {n: str(a) for n, a in c.model.param_areas.items()}
    return ExportReport(files, c.spec.objective_name, names)


@dataclass
class ImportReport:
    weights: str                   # the state_dict file, as given
    output: Path
    objective: str                 # the objective cell's name
    objective_value: CellValue     # recalculated with the imported weights
    cells_written: int
    stale: list[str]               # cells that kept a stale cached value (unsupported function)

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn import-weights --json` prints."""
        return {"output": str(self.output), "objective": self.objective, "objective_value": self.objective_value,
                "cells_written": self.cells_written, "stale": self.stale}


def import_weights(path: str | os.PathLike[str], weights: str | os.PathLike[str],
                   output: str | os.PathLike[str] | None = None, sheet: str | None = None,
                   params: str | None = None, loss: str | None = None) -> ImportReport:
    """Write `weights` (.pt or .safetensors) into the parameter cells of a copy of the workbook
    (default: FILE's stem + .imported + its suffix, beside it)."""
    src = Path(path)
    out = workbook_output(src, output, "imported")   # a bad output path fails before the work
    written, spec = write_weights(src, Path(weights), out, sheet, params, loss)
    objective = written.recalc.grids.value(*spec.objective)
    return ImportReport(str(weights), out, spec.objective_name, objective, written.cells_written, written.stale)
