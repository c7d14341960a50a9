"""inspect: the sheets, the model found and the compiled network."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..api import compile_workbook
from ..compiler.model import ModelSpec
from ..describe import Summary, summarize


@dataclass
class ParamInfo:
    """One parameter range of the model."""
    name: str
    range: str                  # e.g. "nnet!R4:AA5"
    shape: tuple[int, int]      # rows × columns
    labels: list[str]


@dataclass
class InspectReport:
    path: str
    sheets: list[tuple[str, int]]     # (name, formula cells)
    spec: ModelSpec
    parameters: list[ParamInfo]
    summary: Summary

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn inspect --json` prints."""
        spec, s = self.spec, self.summary
        return {
            "sheets": [{"name": name, "formula_cells": n} for name, n in self.sheets],
            "model": {"source": spec.source, "sheet": spec.sheet, "objective": spec.objective_name,
                      "sense": spec.sense, "target": spec.target,
                      "parameters": [{"name": p.name, "range": p.range, "shape": list(p.shape),
                                      "labels": p.labels} for p in self.parameters]},
            "inputs": s.inputs,
            "layers": [vars(layer) for layer in s.layers],
            "formula_cells": s.formula_cells, "families": s.families, "tensor_ops": s.ops,
            "not_differentiable": s.flat,
        }


def inspect_workbook(path: str | os.PathLike[str], sheet: str | None = None,
                     params: str | Sequence[str] | None = None, loss: str | None = None) -> InspectReport:
    """Compile the workbook's model and describe it."""
    c = compile_workbook(path, sheet, params, loss)
    parameters = [ParamInfo(n, str(a), tuple(a.shape), c.model.param_labels[n])
                  for n, a in c.model.param_areas.items()]
    return InspectReport(str(path), [(sh.name, len(sh.formulas)) for sh in c.workbook.sheets.values()],
                         c.spec, parameters, summarize(c.model))
