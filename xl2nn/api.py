"""The Python API: compile a workbook's model, read and write its weights."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .compiler.grid import Recalc, recalculate
from .compiler.lower import CompiledModel, compile_model
from .compiler.model import ModelSpec, find_model
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
    wb = read_workbook(path)
    return wb, build_graph(wb)


def compile_workbook(path: str | os.PathLike[str], sheet: str | None = None, params: str | None = None,
                     loss: str | None = None, device: str | torch.device = "cpu") -> Compiled:
    """Read a workbook and compile its (Solver) model to a torch module."""
    wb, graph = load(path)
    spec = find_model(wb, sheet, params, loss)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return Compiled(wb, graph, spec, compile_model(wb, graph, spec, dev))


def weights(compiled: Compiled) -> dict[str, np.ndarray]:
    """The parameter values by name (as every export format names them), float64 arrays."""
    return {name: t.numpy() for name, t in state_dict(compiled.model).items()}


def recalculate_workbook(path: str | os.PathLike[str]) -> tuple[Workbook, Graph, Recalc]:
    wb, graph = load(path)
    return wb, graph, recalculate(wb, graph)


__all__ = ["Compiled", "compile_workbook", "load", "pick_device", "recalculate_workbook", "weights",
           "export", "read_weights", "state_dict", "write_weights"]
