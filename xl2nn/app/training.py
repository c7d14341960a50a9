"""train: gradient descent on the model, then a copy of the workbook with the trained weights,
the recalculated cells and a trace sheet."""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import load, pick_device
from ..cells import MAX_COL, cell_name
from ..compiler.lower import CompiledModel, compile_model
from ..compiler.model import ModelSpec, find_model
from ..errors import BadInput
from ..progress import Progress
from ..train import TrainOptions, TrainResult, train
from ..writeback import free_sheet_name, parameter_cells, sheet_names, write_trained
from ..writer import LineChart, NewSheet
from .common import workbook_output


@dataclass
class TrainReport:
    output: Path
    spec: ModelSpec
    options: TrainOptions
    result: TrainResult
    device: str
    rows: int                   # the model's rows (the batch dimension)
    parameters: int             # parameter cells
    trace_sheet: str            # the trace sheet's name
    trace_rows: int
    cells_written: int
    stale: list[str]
    stale_inputs: list[str]
    warnings: list[str]         # what the CLI prints as "xl2nn: warning: ..."
    total_seconds: float
    dropout: list[str] = field(default_factory=list)   # RAND cells drawn afresh each step

    def as_dict(self) -> dict[str, Any]:
        """What `xl2nn train --json` prints."""
        spec, o, r = self.spec, self.options, self.result
        return {
            "output": str(self.output), "objective": spec.objective_name, "sense": spec.sense,
            "target": spec.target, "start_loss": r.start_loss, "final_loss": r.final_loss,
            "steps": r.steps, "epochs": r.epochs, "seconds": r.seconds,
            "total_seconds": self.total_seconds, "device": self.device, "dtype": o.dtype,
            "optimizer": o.optimizer, "lr": o.lr, "batch_size": r.batch_size,
            "rows": self.rows, "init": o.init, "seed": o.seed, "log_every": r.log_every,
            "parameters": self.parameters, "trace_sheet": self.trace_sheet, "trace_rows": self.trace_rows,
            "cells_written": self.cells_written, "stale": self.stale,
            "stale_inputs": self.stale_inputs, "warnings": self.warnings,
            "got_worse": r.worse, "relu_units": r.relu_units,
            "inactive_relu_units": r.inactive or [], "interpreted": r.interpreted, "dropout": self.dropout,
            "program": r.mode,
        }


def train_workbook(path: str | os.PathLike[str], sheet: str | None = None,
                   params: str | Sequence[str] | None = None, loss: str | None = None, *,
                   output: str | os.PathLike[str] | None = None, device: str = "auto",
                   steps: int | None = None, epochs: int | None = None, lr: float = 0.1,
                   optimizer: str = "sgd", batch_size: int | None = None, init: str = "workbook",
                   seed: int = 0, log_every: int | None = None, dtype: str = "float64",
                   compile: bool = False) -> TrainReport:
    """Train the workbook's model and write the copy `output` (default: FILE's stem + .trained
    + its suffix, beside it). device: auto (CUDA when available), cpu or cuda."""
    t_start = time.perf_counter()
    src = Path(path)
    out = workbook_output(src, output)       # a bad output path fails before the work
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: CUDA is not available on this machine (torch sees no GPU)")
    dev = pick_device(device)
    opts = TrainOptions(steps=steps, epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
                        init=init, seed=seed, log_every=log_every, dtype=dtype, compile=compile)
    # Tracing the model (make_fx) imports torch._dynamo on first use: 1.6 s. Done now, it
    # overlaps the workbook being read on the other core (reader.prefetch).
    from torch import _dynamo  # noqa: F401
    wb, graph = load(src)                                           # read and parse once
    spec = find_model(wb, sheet, params, loss)
    model = compile_model(wb, graph, spec, dev)
    with Progress() as bar:                  # drawn only when stderr is a terminal
        result = train(model, opts, bar)
    values = parameter_cells(model.param_areas, result.weights, model.loosened)
    trace, shown = trace_sheet(result, model, free_sheet_name(sheet_names(src), "sgd_steps"))
    # model.workbook: parameter cells that held formulas are numbers there, as in the output
    written = write_trained(src, out, model.workbook, model.graph, values, list(model.param_areas.values()),
                            [trace])
    cell = written.recalc.grids.value(*spec.objective)
    n_params = sum(a.size for a in model.param_areas.values())
    warnings = []
    if written.stale:
        also = written.stale_inputs
        warnings.append("kept stale cached values in cells that depend on the parameters but use functions "
                        "xl2nn does not implement: " + ", ".join(written.stale)
                        + (f"; cells computed from them are stale too: {', '.join(also[:10])}"
                           f"{' ...' if len(also) > 10 else ''}" if also else ""))
    if not isinstance(cell, float) or abs(cell - result.final_loss) > 1e-9 * max(abs(result.final_loss), 1e-300):
        warnings.append(f"the recalculated objective {spec.objective_name} = {cell!r} differs from the "
                        f"trained model's {result.final_loss!r}")
    if result.hint(lr):
        warnings.append(result.hint(lr))
    if shown < n_params:
        warnings.append(f"the trace sheet shows the first {shown} of {n_params} parameter cells "
                        "(Excel's column limit)")
    return TrainReport(out, spec, opts, result, str(dev), model.row_count, n_params, trace.name, len(trace.rows),
                       written.cells_written, written.stale, written.stale_inputs, warnings,
                       time.perf_counter() - t_start, model.dropout_cells())


def trace_sheet(result: TrainResult, model: CompiledModel, name: str) -> tuple[NewSheet, int]:
    """The `sgd_steps` sheet: step, loss, then per parameter cell its value, gradient and update.

    Returns the sheet and how many parameter cells it shows (all, unless Excel's column
    limit is reached).
    """
    header = ["step", "loss"]
    room = (MAX_COL - 2) // 3
    shown = 0
    for pname, area in model.param_areas.items():
        for (r, c), label in zip(area.cells(), model.param_labels[pname]):
            if shown == room:
                break
            cell = cell_name(area.sheet, r, c)
            head = cell if label == cell.split("!")[-1] else f"{cell} {label}"
            header += [head, f"dL/d {cell}", f"update {cell}"]
            shown += 1
    tr = result.trace
    rows = np.empty((len(tr.steps), 2 + 3 * shown))
    rows[:, 0], rows[:, 1] = tr.steps, tr.loss
    rows[:, 2::3], rows[:, 3::3], rows[:, 4::3] = tr.weights[:, :shown], tr.grads[:, :shown], tr.updates[:, :shown]
    chart = LineChart(title="Training loss", x_title="step", y_title=model.spec.objective_name, x_col=0, y_cols=[1])
    return NewSheet(name, header, rows, number_format="General", column_width=16.0, chart=chart), shown
