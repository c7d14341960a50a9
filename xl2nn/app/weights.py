"""export and import-weights: the model out as PyTorch files, trained weights back in."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import compile_workbook
from ..cells import CellValue
from ..export import export, write_weights
from .common import workbook_output


@dataclass
class ExportReport:
    files: list[Path]
    objective: str | None          # the objective cell's name (None for a forward export)
    parameters: dict[str, str]     # name -> range
    inputs: dict[str, str] = field(default_factory=dict)   # forward(): argument name -> range, in order
    outputs: str | None = None     # forward(): the range it returns

    @property
    def forward(self) -> bool:
        return self.outputs is not None

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn export --json` prints."""
        d: dict[str, Any] = {"files": [str(f) for f in self.files], "objective": self.objective,
                             "parameters": self.parameters}
        if self.forward:
            d.update(inputs=self.inputs, outputs=self.outputs, arguments=list(self.inputs))
        return d


def export_model(path: str | os.PathLike[str], output: str | os.PathLike[str], sheet: str | None = None,
                 params: str | Sequence[str] | None = None, loss: str | None = None,
                 inputs: str | Sequence[str] | None = None, outputs: str | None = None) -> ExportReport:
    """Write the compiled model in the format `output`'s suffix names (.py, .pt, .safetensors, .onnx).

    With inputs and outputs: forward(*inputs) -> outputs, one float64 argument per input range
    (shaped like it), everything but the params folded as constants."""
    c = compile_workbook(path, sheet, params, loss, inputs=inputs, outputs=outputs)
    files = export(c.model, Path(output), str(path))
    areas = c.model.param_areas
    names = {n: str(a) for n, a in areas.items() if n not in c.model.input_names}
    if c.spec.result is None:
        return ExportReport(files, c.spec.objective_name, names)
    return ExportReport(files, None, names, {n: str(areas[n]) for n in c.model.input_names}, str(c.spec.result))


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
