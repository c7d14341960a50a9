"""The compiled model out to PyTorch (source, state_dict, safetensors, ONNX), and weights back in.

Every format names the parameters the same way: the sheet and range of the Solver's changing
cells, `nnet_R4_AA5`, each a float64 tensor shaped like its range (rows × columns).

A forward-only model (export --inputs/--outputs) exports forward(*inputs) -> outputs: its input
ranges, named the same way, are arguments (ONNX graph inputs), and the state_dict holds the
--params only.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from .compiler.codegen import module_source
from .compiler.lower import CompiledModel
from .compiler.model import ModelSpec
from .compiler.program import Program
from .errors import BadInput
from .writeback import TrainedWrite
from .writer.atomic import atomic_output, output_problem

FORMATS = (".py", ".pt", ".safetensors", ".onnx")


def export(model: CompiledModel, out: Path, source: str) -> list[Path]:
    """Write the model to `out` in the format its suffix names; returns the files written
    (a .py may bring a sibling `.data.safetensors` with its larger constants)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise BadInput(f"{out}: export writes {', '.join(FORMATS)} (by the output's suffix), not {suffix or 'no suffix'}")
    why = output_problem(out)
    if why:
        raise BadInput(f"{out}: {why}")
    if suffix in (".pt", ".safetensors"):
        weights = state_dict(model)
        if not weights:     # a forward export without --params: nothing is state
            raise BadInput(f"{out}: a {suffix} file holds the parameters' state_dict, and this forward export "
                           "has no --params; give --params RANGE, or write .py or .onnx")
        if suffix == ".safetensors":
            return [_write(out, _safetensors_bytes(weights))]
        buf = io.BytesIO()
        torch.save(weights, buf)
        return [_write(out, buf.getvalue())]
    program = Program(model)
    if program.full is None:
        what = ("the outputs cannot be exported as a traced function of the inputs" if model.input_names
                else "the model cannot be exported as PyTorch")
        raise BadInput(f"{source}: {what}: {program.fallback}")
    if suffix == ".py":
        return _write_python(program, out, source)
    return [_write_onnx(program, out, source)]


def state_dict(model: CompiledModel) -> dict[str, torch.Tensor]:
    """The parameters by name (a forward-only model's inputs are arguments, not state)."""
    return {name: p.detach().to("cpu", torch.float64).contiguous().clone() for name, p in model.weights.items()
            if name not in model.input_names}


def _write(path: Path, data: bytes) -> Path:
    try:
        with atomic_output(path) as fh:
            fh.write(data)
    except PermissionError:
        raise BadInput(f"{path}: cannot write there (permission denied)") from None
    return path


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save
    return save(dict(tensors))


def _title(program: Program, source: str) -> str:
    spec = program.model.spec
    if spec.result is not None:
        return f"{Path(source).name}: {spec.result} from {', '.join(str(a) for a in spec.inputs)} (forward)"
    sense = {"min": "minimise", "max": "maximise", "value": f"reach {spec.target} with"}[spec.sense]
    return f"{Path(source).name}: {sense} {spec.objective_name} ({spec.source})"


def _write_python(program: Program, out: Path, source: str) -> list[Path]:
    data_file = out.with_suffix(".data.safetensors")
    src = module_source(program, title=_title(program, source), data_file=data_file.name)
    written = []
    if src.data:
        written.append(_write(data_file, _safetensors_bytes(src.data)))
    written.insert(0, _write(out, src.code.encode("utf-8")))
    return written


def load_python(path: Path) -> torch.nn.Module:
    """An instance of the Model class of an exported .py (imported under a private name)."""
    name = "_xl2nn_export_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        return module.Model()
    finally:
        sys.modules.pop(name, None)


class _WeightsAsInputs(torch.nn.Module):
    """ONNX wants inputs: the objective as a function of the parameter tensors."""

    def __init__(self, inner: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.inner, dict(zip(self.names, weights)), ())


def _onnx_function(program: Program, module: torch.nn.Module
                   ) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], str]:
    """What the ONNX graph computes, its example arguments, their names and the output's name:
    forward(*inputs) -> "outputs" with the parameters as initializers (a forward-only model),
    else the objective as a function of the parameters."""
    if program.model.input_names:
        return module, tuple(module.example_inputs()), list(program.model.input_names), "outputs"
    names = [n for n, _ in module.named_parameters()]
    return _WeightsAsInputs(module, names), tuple(p.detach() for p in module.parameters()), names, "objective"


def _write_onnx(program: Program, out: Path, source: str) -> Path:
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:   # torch.onnx needs both
        raise BadInput(f"{out}: ONNX export needs the onnx and onnxscript packages: "
                       "pip install 'xl2nn[onnx]'")
    with tempfile.TemporaryDirectory() as tmp:
        py = Path(tmp) / "model.py"
        _write_python(program, py, source)
        wrapped, args, names, output = _onnx_function(program, load_python(py))
        onnx_file = Path(tmp) / "model.onnx"
        with _quiet():
            torch.onnx.export(wrapped, args, str(onnx_file), dynamo=True, input_names=names,
                              output_names=[output], external_data=False, verbose=False)
        return _write(out, onnx_file.read_bytes())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx reports its progress and warnings on stdout, stderr and logging: the command's
    own summary is what the user asked for."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------- weights back in

def read_weights(path: Path) -> dict[str, np.ndarray]:
    """A state_dict from a .pt (torch.save) or .safetensors file, as float64 arrays."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            raw = load_file(str(path))
        elif suffix in (".pt", ".pth"):
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise BadInput(f"{path}: weights are read from .pt or .safetensors files, not {suffix or 'no suffix'}")
    except BadInput:
        raise
    except Exception as exc:   # a damaged or foreign file: one line, not a traceback
        raise BadInput(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise BadInput(f"{path}: not a state_dict (a mapping of names to tensors)")
    return {str(k): v.detach().to("cpu", torch.float64).numpy() for k, v in raw.items()}


def check_weights(model: CompiledModel, weights: Mapping[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """The weights for every parameter, by name and shape; anything else is a one-line error."""
    want = {name: tuple(area.shape) for name, area in model.param_areas.items()}
    missing = [n for n in want if n not in weights]
    extra = [n for n in weights if n not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise BadInput(f"{path}: the weights do not match the model's parameters ({'; '.join(parts)}); "
                       f"expected {', '.join(f'{n} {h}×{w}' for n, (h, w) in want.items())}")
    out = {}
    for name, shape in want.items():
        w = np.asarray(weights[name], dtype=np.float64)
        if w.shape != shape and not (w.size == shape[0] * shape[1] and w.ndim == 1):
            raise BadInput(f"{path}: {name} has shape {'×'.join(map(str, w.shape))}, but "
                           f"{model.param_areas[name]} is {shape[0]}×{shape[1]}")
        if not np.isfinite(w).all():
            raise BadInput(f"{path}: {name} holds NaN or infinite values; a cell cannot hold them")
        out[name] = w.reshape(shape)
    return out


def write_weights(src: Path, weights: Mapping[str, np.ndarray] | Path, dst: Path, sheet: str | None = None,
                  params: str | None = None, loss: str | None = None) -> tuple[TrainedWrite, ModelSpec]:
    """A copy of the workbook `src` at `dst` with `weights` (a mapping, or a .pt/.safetensors
    file) in the parameter cells and every formula cell's cached value recomputed for them."""
    from .compiler.lower import compile_model
    from .compiler.model import find_model
    from .writeback import parameter_cells, write_trained
    where = Path(weights) if isinstance(weights, (str, Path)) else Path("weights")
    raw = read_weights(where) if isinstance(weights, (str, Path)) else weights   # bad files fail first
    from .ir.graph import build_graph
    from .reader import read_workbook
    wb = read_workbook(src)
    graph = build_graph(wb)
    spec = find_model(wb, sheet, params, loss)
    model = compile_model(wb, graph, spec)
    checked = check_weights(model, raw, where)
    written = write_trained(Path(src), Path(dst), model.workbook, model.graph,
                            parameter_cells(model.param_areas, checked, model.loosened),
                            list(model.param_areas.values()))
    return written, spec


__all__ = ["export", "state_dict", "read_weights", "check_weights", "write_weights", "load_python", "FORMATS"]
