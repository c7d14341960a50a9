"""Training: gradient descent on a compiled workbook model (`xl2nn train`).

The loop never reads a number back from the device inside a step: per-step objective
values go into a device tensor that is checked for NaN/inf once every CHECK_EVERY steps,
and the trace rows (w_k, dL/dw at w_k, the update applied) are copied into device tensors
at logged steps and fetched once at the end. CPU and CUDA run the same code.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .cells import Area, CellError
from .compiler.lower import CompiledModel
from .compiler.model import ModelSpec
from .compiler.program import Program
from .errors import BadInput
from .progress import Progress

OPTIMIZERS = ("sgd", "momentum", "adam")
INITS = ("workbook", "random")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_STEPS = 1000
DEFAULT_LR = 0.1          # plain SGD from random init reaches Solver's loss on the titanic sheets
MOMENTUM = 0.9
MAX_TRACE_ROWS = 1000     # the default --log-every keeps the trace sheet about this long
CHECK_EVERY = 100         # steps between NaN/inf checks (each one is a device sync)
# Below this many numbers in any one tensor, ops are too small to split across CPU threads, and
# worker threads that spin while another process has the core slow a step 3-40x: use one.
SMALL_TENSOR = 1 << 18


@dataclass
class TrainOptions:
    steps: int | None = None          # None: --epochs, or DEFAULT_STEPS
    epochs: int | None = None
    lr: float = DEFAULT_LR
    optimizer: str = "sgd"
    batch_size: int | None = None     # None: full batch
    init: str = "workbook"
    seed: int = 0
    log_every: int | None = None      # None: so that at most ~MAX_TRACE_ROWS rows are logged
    dtype: str = "float64"
    compile: bool = False             # torch.compile the traced program


@dataclass
class Trace:
    """The logged rows, float64. Row k: the objective at w_k, w_k, dL/dw at w_k, w_{k+1} - w_k.

    Parameters are flattened in model.weights order, each range row-major (Area.cells()).
    The last row holds the final weights, the objective and gradient there, and NaN updates.
    """

    steps: np.ndarray      # (n,)
    loss: np.ndarray       # (n,) the objective cell's own value (full batch, even when training on batches)
    weights: np.ndarray    # (n, P)
    grads: np.ndarray      # (n, P) gradient of the minimised loss (the batch's, on batches)
    updates: np.ndarray    # (n, P)


@dataclass
class TrainResult:
    steps: int
    steps_per_epoch: int
    batch_size: int | None            # as used (capped at the row count); None for full batch
    log_every: int
    start_loss: float                 # the objective cell at the start and at the end
    final_loss: float
    seconds: float
    weights: dict[str, np.ndarray]    # final, float64, shaped like the ranges
    trace: Trace
    worse: bool = False               # the objective ended further from its goal than it started
    inactive: list[str] | None = None  # ReLU units that output 0 on every row at the end
    relu_units: int = 0               # how many ReLU units there are in all
    interpreted: str = ""             # which cells ran in the interpreter, and why
    mode: str = "traced"              # the program: traced, mixed (some families interpreted), interpreted

    def hint(self, lr: float) -> str:
        """What to say when training made things worse, '' when it did not."""
        if not self.worse:
            return ""
        dead = (f"; {len(self.inactive)} of {self.relu_units} ReLU units are inactive on every row "
                f"({', '.join(self.inactive[:6])}{', ...' if len(self.inactive) > 6 else ''}), "
                "so no gradient reaches their weights" if self.inactive else "")
        return (f"the objective got worse: {self.start_loss:.10g} at the start, {self.final_loss:.10g} "
                f"at the end{dead}; try a smaller --lr (e.g. {lr / 10:g})")

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch


def loss_function(spec: ModelSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """What gradient descent minimises, from Solver's sense: y, -y, or (y - target)^2."""
    if spec.sense == "max":
        return lambda y: -y
    if spec.sense == "value":
        target = float(spec.target or 0.0)
        return lambda y: (y - target) ** 2
    return lambda y: y


class CompileWarning(UserWarning):
    """torch.compile could not be used; training went on without it."""


def train(model: CompiledModel, opts: TrainOptions, progress: Progress | None = None) -> TrainResult:
    """Train `model` in place; raises BadInput (nothing written) on bad options or divergence."""
    _check_options(opts)
    params = list(model.weights.values())
    if not params:
        raise BadInput(f"{model.workbook.path}: the model has no parameter cells to train")
    device = params[0].device
    gen = torch.Generator().manual_seed(opts.seed)
    if opts.init == "random":
        _random_init(params, gen)
    # RAND cells the objective reads (dropout masks) draw afresh each step, from torch's
    # generator seeded with --seed (kept apart from the caller's); the last row is the sheet's.
    dropout = bool(model.random_families)
    if not dropout:
        return _train(model, opts, progress, params, device, gen, dropout)
    with torch.no_grad():       # the sheet's objective at the start, with its saved draws
        start = float(model())
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.fresh_random = True
        try:
            result = _train(model, opts, progress, params, device, gen, dropout)
        finally:
            model.fresh_random = False
    # Start and end are both the sheet's (step 0's loss, in the trace, is a fresh draw's), so
    # that "got worse" compares like with like.
    loss_of = loss_function(model.spec)
    result.start_loss = start
    result.worse = bool(loss_of(torch.tensor(result.final_loss)) > loss_of(torch.tensor(start)))
    return result


def _train(model: CompiledModel, opts: TrainOptions, progress: Progress | None, params: list[torch.nn.Parameter],
           device: torch.device, gen: torch.Generator, dropout: bool) -> TrainResult:
    program = Program(model)        # the traced straight-line forward (or the interpreter)
    start = ([p.detach().clone() for p in params], gen.get_state())   # to replay a failed run
    batch, per_epoch = None, 1
    if opts.batch_size is not None:
        with torch.no_grad():   # raises BadInput, one line, when the objective is not a mean/sum over rows
            model.batch_objective(torch.zeros(1, dtype=torch.long, device=device))
        batch = min(opts.batch_size, model.row_count)
        per_epoch = math.ceil(model.row_count / batch)
        for size in {batch, model.row_count - (per_epoch - 1) * batch}:   # trace before any cast
            program.batch(torch.arange(size, device=device))
    total = opts.steps if opts.steps is not None else \
        opts.epochs * per_epoch if opts.epochs is not None else DEFAULT_STEPS
    log_every = opts.log_every or max(1, math.ceil(total / MAX_TRACE_ROWS))
    dtype = DTYPES[opts.dtype]
    if dtype != torch.float64:
        _cast(program, dtype, opts.dtype)
    if opts.compile:
        why = program.compile()
        if why:
            warnings.warn(CompileWarning(f"--compile: {why}; training without it"))
    threads = torch.get_num_threads()
    if device.type == "cpu" and _largest_tensor(program) < SMALL_TENSOR:
        torch.set_num_threads(1)
    try:
        try:
            if dropout:
                torch.manual_seed(opts.seed)
            result = _run(model, program, params, opts, gen, batch, per_epoch, total, log_every, progress)
        except Diverged as exc:
            if exc.step == 0 or exc.step >= total:
                raise
            # Found some steps late (one check per CHECK_EVERY steps): run again up to that step,
            # which is deterministic, so that the sheet can say what it gives at those weights.
            with torch.no_grad():
                for p, s in zip(params, start[0]):
                    p.copy_(s)
            gen.set_state(start[1])
            if dropout:
                torch.manual_seed(opts.seed)
            _run(model, program, params, opts, gen, batch, per_epoch, exc.step, exc.step, None)
            raise exc from None          # not reached: _run ends in the explained error
        result.interpreted, result.mode = program.fallback, program.mode
        return result
    finally:
        torch.set_num_threads(threads)
        if dtype != torch.float64:
            program.to(torch.float64)


def _largest_tensor(program: Program) -> int:
    tensors = list(program.buffers()) + list(program.model.weights.values())
    return max((t.numel() for t in tensors), default=0)


def _run(model: CompiledModel, program: Program, params: list[torch.nn.Parameter], opts: TrainOptions,
         gen: torch.Generator,
         batch: int | None, per_epoch: int, total: int, log_every: int, progress: Progress | None
         ) -> TrainResult:
    device = params[0].device
    f64 = torch.float64
    loss_of = loss_function(model.spec)
    opt = _optimizer(opts.optimizer, params, opts.lr)
    n_log = len(range(0, total, log_every))
    width = sum(p.numel() for p in params)
    objective = torch.full((total,), math.nan, dtype=f64, device=device)   # per step, for NaN checks
    t_loss = torch.empty(n_log + 1, dtype=f64, device=device)
    t_w = torch.empty((n_log + 1, width), dtype=f64, device=device)
    t_g = torch.empty((n_log + 1, width), dtype=f64, device=device)
    t_u = torch.full((n_log + 1, width), math.nan, dtype=f64, device=device)
    batches = _batches(model.row_count, batch, gen, device) if batch else None
    progress = progress or Progress(enabled=False)
    progress.start(total)
    checked = 0
    t0 = time.perf_counter()
    for k in range(total):
        opt.zero_grad(set_to_none=True)
        y = program.batch(next(batches)) if batches is not None else program()
        if not y.requires_grad:     # an error value or a branch that left the parameters behind
            raise _no_gradient(model, k, float(y.detach()), opts)
        loss_of(y).backward()
        objective[k] = y.detach()
        j = k // log_every if k % log_every == 0 else None
        if j is not None:
            if batches is not None:
                with torch.no_grad():       # the trace shows the sheet's own (full) objective
                    t_loss[j] = program()
            else:
                t_loss[j] = y.detach()
            t_w[j] = _flat(params)
            t_g[j] = _flat([p.grad for p in params])
        opt.step()
        if j is not None:
            t_u[j] = _flat(params) - t_w[j]
        if (k + 1) % CHECK_EVERY == 0 or k + 1 == total:
            _check_finite(objective, checked, k + 1, opts)
            checked = k + 1
        progress.update(k + 1, lambda y=y: float(y.detach()))
    # The final row, in float64: the weights reached, the objective and its gradient there,
    # with the sheet's own RAND values (what the written workbook shows), not a fresh draw.
    program.to(f64)
    opt.zero_grad(set_to_none=True)
    model.fresh_random = False
    y = model()
    if not y.requires_grad:
        raise _no_gradient(model, total, float(y.detach()), opts)
    loss_of(y).backward()
    t_loss[n_log], t_w[n_log] = y.detach(), _flat(params)
    t_g[n_log] = _flat([p.grad for p in params])
    final = float(y.detach())
    if not math.isfinite(final):
        raise _explain(model, total, final, opts)
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    steps = np.array(list(range(0, total, log_every)) + [total], dtype=np.float64)
    trace = Trace(steps, t_loss.cpu().numpy(), t_w.cpu().numpy(), t_g.cpu().numpy(), t_u.cpu().numpy())
    weights = {name: p.detach().to(f64).cpu().numpy().copy() for name, p in model.weights.items()}
    start = float(trace.loss[0])
    with torch.no_grad():
        worse = bool(loss_of(torch.tensor(final)) > loss_of(torch.tensor(start)))
    units, inactive = _relu_units(model)
    return TrainResult(total, per_epoch, batch, log_every, start, final, seconds, weights, trace,
                       worse, inactive, units)


def _relu_units(model: CompiledModel) -> tuple[int, list[str]]:
    """ReLU units (IF(x<0,0,x), MAX(0,x), ...: one per column of a family over rows) and those
    whose output is 0 on every row at the model's last forward: dead, no gradient reaches them."""
    from .describe import is_relu
    units, dead = 0, []
    for fam in model.op_families:
        out = model.outputs.get(fam.id)
        if out is None or not is_relu(fam.ast):
            continue
        rows, cols = fam.out_cells()
        zero = (out.detach() == 0).cpu().numpy()
        for c in np.unique(cols):
            units += 1
            here = cols == c
            if zero[here].all():
                r = rows[here]
                dead.append(str(Area(fam.sheet, int(r.min()), int(c), int(r.max()), int(c))))
    return units, dead


def _check_options(opts: TrainOptions) -> None:
    if not (math.isfinite(opts.lr) and opts.lr > 0):
        raise BadInput(f"--lr must be a positive number, not {opts.lr:g}")
    if opts.steps is not None and opts.epochs is not None:
        raise BadInput("give --steps or --epochs, not both")
    for flag, value, low in (("--steps", opts.steps, 0), ("--epochs", opts.epochs, 1),
                             ("--batch-size", opts.batch_size, 1), ("--log-every", opts.log_every, 1)):
        if value is not None and value < low:
            raise BadInput(f"{flag} must be at least {low}, not {value}")
    for flag, value, allowed in (("--optimizer", opts.optimizer, OPTIMIZERS), ("--init", opts.init, INITS),
                                 ("--dtype", opts.dtype, tuple(DTYPES))):
        if value not in allowed:
            raise BadInput(f"{flag} must be one of {', '.join(allowed)}, not {value!r}")


def _random_init(params: list[torch.nn.Parameter], gen: torch.Generator) -> None:
    """Uniform in [-0.5, 0.5), drawn on the CPU so that CPU and CUDA runs start identically."""
    with torch.no_grad():
        for p in params:
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5)


def _cast(program: Program, dtype: torch.dtype, name: str) -> None:
    """Cast the traced program and check that forward and backward really run in `dtype`
    (a program that fell back to the interpreter, whose literals are float64, cannot)."""
    why = None if program.traced else f"it is interpreted: {program.fallback or 'a batch trace differed'}"
    if why is None:
        program.to(dtype)
        try:
            program.zero_grad(set_to_none=True)
            y = program()
            y.backward()
            grads = [p.grad.dtype for p in program.model.weights.values() if p.grad is not None]
            if y.dtype != dtype or any(g != dtype for g in grads):
                why = f"its objective comes out as {y.dtype}"
        except RuntimeError as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        program.zero_grad(set_to_none=True)
    if why is not None:
        program.to(torch.float64)
        raise BadInput(f"--dtype {name} is not supported by this model ({why}); use --dtype float64")


def _optimizer(name: str, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def _batches(n: int, size: int, gen: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Row indices, without replacement: each epoch is one permutation cut into batches."""
    while True:
        perm = torch.randperm(n, generator=gen).to(device)   # one transfer per epoch, not per step
        for start in range(0, n, size):
            yield perm[start:start + size]


def _flat(tensors: list[torch.Tensor | None]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def _check_finite(values: torch.Tensor, start: int, stop: int, opts: TrainOptions) -> None:
    bad = ~torch.isfinite(values[start:stop])
    if bool(bad.any()):          # one sync per chunk of steps
        k = start + int(bad.nonzero()[0, 0])
        raise _diverged(k, float(values[k]), opts)


def _no_gradient(model: CompiledModel, step: int, value: float, opts: TrainOptions) -> BadInput:
    """No gradient reaches the parameters: say what the sheet itself gives at these weights."""
    cell, source = _sheet_objective(model)
    where = "at the workbook's weights" if step == 0 else f"at step {step} ({opts.optimizer}, --lr {opts.lr:g})"
    if isinstance(cell, CellError):
        what = f"is {cell} {where}; it comes from {source}"
    else:
        what = (f"= {cell!r} {where} does not depend on the parameters there (e.g. IFs that select no "
                "parameter-dependent branch)")
    return BadInput(f"no gradient: the objective {model.spec.objective_name} {what}; nothing was written"
                    + ("; try a smaller --lr" if step else ""))


class Diverged(BadInput):
    """The objective stopped being a finite number at `step`."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def _diverged(step: int, value: float, opts: TrainOptions) -> Diverged:
    return Diverged(f"training diverged: the objective became {value} at step {step} "
                    f"({opts.optimizer}, --lr {opts.lr:g}); nothing was written; try a smaller --lr", step)


def _explain(model: CompiledModel, step: int, value: float, opts: TrainOptions) -> BadInput:
    """A non-finite objective at the model's current weights: an error the sheet gives there
    (named, with where it starts), or else divergence."""
    if all(bool(torch.isfinite(p).all()) for p in model.weights.values()):
        cell, source = _sheet_objective(model)
        if isinstance(cell, CellError):
            return Diverged(f"training diverged: the objective became {value} at step {step} ({opts.optimizer}, "
                            f"--lr {opts.lr:g}): the sheet gives {cell} there, from {source}; nothing was "
                            "written; try a smaller --lr", step)
    return _diverged(step, value, opts)


def _sheet_objective(model: CompiledModel) -> tuple[object, str]:
    """The objective as the sheet computes it at the model's current weights (by the sheet's
    rules, checked), and for an error, where it comes from."""
    from .compiler.grid import error_source, recalculate
    from .writeback import parameter_cells
    weights = {n: p.detach().cpu().numpy() for n, p in model.weights.items()}
    grids = recalculate(model.workbook, model.graph, only=model.needed,
                        overrides=parameter_cells(model.param_areas, weights)).grids
    sheet, row, col = model.spec.objective
    cell = grids.value(sheet, row, col)
    return cell, (error_source(model.graph, grids, sheet, row, col) if isinstance(cell, CellError) else "")
