"""The Python API: compile a workbook's model, read and write its weights."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .compiler.forward import compile_forward, forward_spec
from .compiler.grid import Recalc, recalculate
from .compiler.lower import CompiledModel, compile_model
from .compiler.model import ModelSpec, find_model
from .compiler.resolve import resolve_references
from .errors import BadInput
from .ir.graph import Graph, build_graph
from .reader import Workbook, read_workbook
from .export import export, read_weights, state_dict, write_weights


@dataclass
class Compiled:
    workbook: Workbook
    graph: Graph
    spec: ModelSpec
    model: CompiledModel


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load(path: str | os.PathLike[str]) -> tuple[Workbook, Graph]:
    wb = read_workbook(_path(path, "path"))
    graph = build_graph(wb)
    resolve_references(wb, graph)       # where OFFSET, INDIRECT ... land: dependencies too
    return wb, graph


def compile_workbook(path: str | os.PathLike[str], sheet: str | None = None,
                     params: str | Sequence[str] | None = None, loss: str | None = None,
                     device: str | torch.device = "cpu", inputs: str | Sequence[str] | None = None,
                     outputs: str | None = None) -> Compiled:
    """Read a workbook and compile its (Solver) model to a torch module.

    params: ranges as the CLI takes them ("B24:C26,B5:E7") or as a list (["B24:C26", "B5:E7"]).
    inputs and outputs (together, no loss): a forward-only model, whose forward() returns the
    outputs range (rows × columns) computed from the input ranges; its `weights` hold the inputs
    (`model.input_names`) and then the params.
    """
    ins, outs = _ranges(inputs, "inputs"), _text(outputs, "outputs")
    forward = _forward_flags(path, ins, outs, loss)      # bad flags fail before the work
    wb, graph = load(path)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    if forward:
        spec = forward_spec(wb, _text(sheet, "sheet"), ins, outs, _ranges(params, "params"))
        return Compiled(wb, graph, spec, compile_forward(wb, graph, spec, dev))
    spec = find_model(wb, _text(sheet, "sheet"), _ranges(params, "params"), _text(loss, "loss"))
    return Compiled(wb, graph, spec, compile_model(wb, graph, spec, dev))


def _forward_flags(path: object, inputs: str | None, outputs: str | None, loss: object) -> bool:
    """Whether inputs/outputs ask for a forward-only model; they come together, without loss."""
    if inputs is None and outputs is None:
        return False
    if not inputs or not outputs:
        given, missing = ("--inputs", "--outputs") if inputs else ("--outputs", "--inputs")
        raise BadInput(f"{path}: {given} needs {missing}: a forward export computes --outputs RANGE from "
                       "--inputs RANGE[,RANGE]")
    if loss is not None:
        raise BadInput(f"{path}: --loss names an objective; a forward export (--inputs/--outputs) returns the "
                       "--outputs range instead: give one or the other")
    return True


def weights(compiled: Compiled) -> dict[str, np.ndarray]:
    """The parameter values by name (as every export format names them), float64 arrays."""
    return {name: t.numpy() for name, t in state_dict(compiled.model).items()}


def _path(value: object, name: str) -> str | os.PathLike[str]:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a pathlib.Path, not {type(value).__name__}")
    return value


def _text(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _ranges(value: object, name: str) -> str | None:
    """'A1:B2,C3' or ['A1:B2', 'C3'] -> 'A1:B2,C3'."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise TypeError(f"{name} must be a str like 'B24:C26,B5:E7' or a list of such ranges, "
                    f"not {type(value).__name__}")


def recalculate_workbook(path: str | os.PathLike[str]) -> tuple[Workbook, Graph, Recalc]:
    wb, graph = load(path)
    return wb, graph, recalculate(wb, graph)


__all__ = ["Compiled", "compile_workbook", "load", "pick_device", "recalculate_workbook", "weights",
           "export", "read_weights", "state_dict", "write_weights"]
