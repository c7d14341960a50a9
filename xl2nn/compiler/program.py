"""The compiled model as a straight-line program: one trace of the interpreter, then rewrites.

`CompiledModel.forward` interprets each family's formula over Excel values (kinds, text,
errors) on every call. Training needs none of that: the parameters only ever change numbers.
So the forward is traced once with real tensors (torch.fx's make_fx) into an fx graph of aten
ops, the graph is simplified (view chains, bool round trips, IF-ReLU, constant literals),
and training runs that graph.

The trace is right by construction: while it runs, `HostReadGuard` refuses every read of a
parameter-dependent number into Python or NumPy (a function with no torch form for it), so
nothing that depends on the weights can be frozen into a constant. A family that needs such a
read runs in the interpreter inside the program (mixed mode): the families before and after it
are traced segments, so the model is exact and only that family is slow; `fallback` says which
cells and function. `check()` compares the program with the interpreter at several weight
points: verify and the tests call it, nothing depends on it.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterator

import torch
import torch.fx.traceback as fx_traceback
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module

from ..errors import UnsupportedFormula
from .hostread import HostRead, HostReadGuard
from .lower import CompiledModel
from .rewrites import FREE, optimise


class Program(nn.Module):
    """objective = program(); batch estimate = program.batch(index). Shares the model's Parameters."""

    def __init__(self, model: CompiledModel) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.weights.keys())
        self._batches = nn.ModuleDict()      # one traced program per batch size ...
        self._untraced: set[str] = set()     # ... or, where it cannot be traced, the interpreter
        self._batches_compiled: dict[str, object] = {}
        self.full: fx.GraphModule | None = None
        self.fallback = ""          # why the interpreter runs instead (empty: the trace runs)
        self.compiled = False       # torch.compile'd (see compile())
        self.segments: list[Segment] | None = None    # mixed mode: traced and interpreted runs
        try:
            self.full = optimise(_trace(model, None), objective=model.spec.result is None)
        except HostRead as exc:     # a function with no torch form on the parameter path
            self.fallback = exc.reason()
            self.segments = _segments(model, exc)
        except Exception as exc:    # a construct the tracer cannot follow: interpret instead
            self.fallback = f"not traceable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        self._segment_modules = nn.ModuleList([s.program for s in self.segments or [] if s.program is not None])

    @property
    def mode(self) -> str:
        """'traced', 'mixed' (some families interpreted) or 'interpreted'."""
        return "traced" if self.full is not None else "mixed" if self.segments else "interpreted"

    @property
    def traced(self) -> bool:
        """True when nothing runs through the interpreter (float32 needs that)."""
        return self.full is not None and not self._untraced

    def _weights(self) -> list[torch.Tensor]:
        # (the dict itself, in self.names' order: ParameterDict's __getitem__ costs a step ~1 µs each)
        return list(self.model.weights._parameters.values())

    def forward(self) -> torch.Tensor:
        if self.full is None:
            return self.model() if self.segments is None else self._mixed()
        if self.compiled:
            return self._full_compiled(*self._weights())
        return self.full.forward(*self._weights())   # no hooks: skip Module.__call__

    def _mixed(self) -> torch.Tensor:
        model = self.model
        outs = model.initial_outs()
        weights = self._weights()
        for seg in self.segments or []:
            if seg.program is None:
                model.run_steps(outs, seg.steps)
            else:
                got = seg.program.forward(*weights, *[outs[i] for i in seg.inputs])
                outs.update(zip(seg.outputs, got))
        return model.objective_of(outs)

    def compile(self) -> str:
        """Run the traced programs through torch.compile from now on (fused kernels: ~30% off
        a CPU step at 10,000+ rows, after ~10 s of compiling). Returns why not, if it cannot."""
        if self.full is None:
            return self.fallback
        try:
            compiled = torch.compile(self.full, dynamic=False)
            with torch.no_grad():
                compiled(*self._weights())
        except Exception as exc:            # e.g. no C++ compiler for inductor: stay eager
            return f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        self._full_compiled = compiled
        self.compiled = True
        return ""

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The objective on the rows `index` (see CompiledModel.batch_objective)."""
        if self.full is None:
            return self.model.batch_objective(index)
        key = str(len(index))
        if key not in self._batches and key not in self._untraced:
            with torch.no_grad():                  # a model that cannot batch says so here
                self.model.batch_objective(index)
            try:
                self._batches[key] = optimise(_trace(self.model, index))
            except Exception:   # HostRead, or a construct the tracer cannot follow
                self._untraced.add(key)
        if key in self._untraced:
            return self.model.batch_objective(index)
        gm = self._batches[key]
        if self.compiled:
            if key not in self._batches_compiled:
                self._batches_compiled[key] = torch.compile(gm, dynamic=False)
            return self._batches_compiled[key](*self._weights(), index)
        return gm(*self._weights(), index)

    def check(self, points: int = 4) -> float:
        """Largest relative difference to the interpreter, at the current weights and at
        `points - 1` random perturbations of them; the weights are left as they were."""
        worst = 0.0
        if self.mode == "interpreted":
            return worst
        with torch.no_grad():
            for _ in weight_points(self.model, points, 0.6):
                try:
                    b = self.model()
                except UnsupportedFormula:      # ISNA of a computed error: nothing to compare
                    continue
                worst = max(worst, _max_rel(self.forward(), b))
        return worst

    def count_ops(self) -> int:
        """Tensor ops per forward (views and slices, which compute nothing, not counted)."""
        if self.full is None:
            return 0
        return sum(1 for n in self.full.graph.nodes if n.op == "call_function" and n.target not in FREE
                   and not (n.target is operator.getitem and not _gathers(n)))


def _gathers(node: fx.Node) -> bool:
    """x[i] with a tensor i copies entries; x[:, a:b] is a view."""
    key = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    return any(isinstance(k, fx.Node) for k in key)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative difference of a to b (the objective, or a forward-only model's range);
    inf where one side is an error and the other is not. An error is any non-finite number: the
    program may leave an overflow as inf where the interpreter says NaN (see guards.py)."""
    a, b = a.detach().double(), b.detach().double()
    nan_a, nan_b = ~torch.isfinite(a), ~torch.isfinite(b)
    if bool((nan_a != nan_b).any()):
        return math.inf
    rel = (a - b).abs() / b.abs().clamp_min(1e-300)
    rel = torch.where((a == b) | nan_a, torch.zeros_like(rel), rel)
    return float(rel.max()) if rel.numel() else 0.0


def weight_points(model: CompiledModel, points: int, scale: float, seed: int = 0) -> Iterator[int]:
    """Set the model's weights to each of `points` points in turn, yielding its index: 0 is the
    weights as they are, the others move each weight by up to ±scale/2 × max(|w|, 1) at
    random (seeded); the weights are restored afterwards."""
    gen = torch.Generator().manual_seed(seed)
    params = list(model.weights.values())
    saved = [p.detach().clone() for p in params]
    try:
        for k in range(points):
            with torch.no_grad():
                for p, s in zip(params, saved):
                    noise = torch.rand(s.shape, generator=gen, dtype=torch.float64).to(s.device, s.dtype) - 0.5
                    p.copy_(s + (scale if k else 0.0) * noise * s.abs().clamp_min(1.0))
            yield k
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


class Segment:
    """A run of steps: traced into `program` (inputs: the weights, then the outputs of earlier
    families it reads; outputs: its families' outputs read later), or interpreted (None)."""

    def __init__(self, steps: list, program: fx.GraphModule | None = None, inputs: list[int] | None = None,
                 outputs: list[int] | None = None) -> None:
        self.steps = steps
        self.program = program
        self.inputs = inputs or []
        self.outputs = outputs or []


def _segments(model: CompiledModel, first: HostRead) -> list[Segment] | None:
    """Mixed mode: the families that need the interpreter (found one trace at a time) run
    there; the runs between them are traced. None if even that cannot be traced."""
    steps = model.steps
    interpreted = {first.family.id} if first.family is not None else set()
    try:
        with torch.no_grad():       # example inputs: every family at the current weights
            model()
    except Exception:               # e.g. ISNA of an error there: the interpreter alone says so
        return None
    examples = {i: t.detach() for i, t in model.outputs.items()}
    for _ in range(len(steps)):
        try:
            return _build_segments(model, steps, interpreted, examples)
        except HostRead as exc:
            if exc.family is None or exc.family.id in interpreted:
                return None
            interpreted.add(exc.family.id)
        except Exception:
            return None
    return None


def _build_segments(model: CompiledModel, steps: list, interpreted: set[int],
                    examples: dict[int, torch.Tensor]) -> list[Segment]:
    runs: list[list] = []
    for step in steps:
        alone = step.family.id in interpreted
        if alone or not runs or runs[-1][0].family.id in interpreted:
            runs.append([step])
        else:
            runs[-1].append(step)
    read_later: list[set[int]] = [set() for _ in runs]
    needed = model.result_producers()
    for k in range(len(runs) - 1, -1, -1):
        read_later[k] = set(needed)
        for step in runs[k]:
            needed |= step.producers()
    n_params = set(model.initial_outs())
    segments = []
    for k, run in enumerate(runs):
        ids = [s.family.id for s in run]
        if run[0].family.id in interpreted:
            segments.append(Segment(run))
        else:
            inputs = sorted({p for s in run for p in s.producers()} - set(ids) - n_params)
            outputs = [i for i in ids if i in read_later[k]]
            program = optimise(_trace_steps(model, run, inputs, outputs, [examples[i] for i in inputs]), objective=False)
            segments.append(Segment(run, program, inputs, outputs))
    return segments


def _trace_steps(model: CompiledModel, run: list, inputs: list[int], outputs: list[int],
                 examples: list[torch.Tensor]) -> fx.GraphModule:
    names = list(model.weights.keys())

    def segment(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ws = {"weights." + n: w for n, w in zip(names, args)}
        with _reparametrize_module(model, ws):
            outs = model.initial_outs()
            outs.update(zip(inputs, args[len(names):]))
            model.run_steps(outs, run)
            return tuple(outs[i] for i in outputs)

    return _guarded_trace(model, segment, [model.weights[n].detach() for n in names] + examples)


def _trace(model: CompiledModel, index: torch.Tensor | None) -> fx.GraphModule:
    names = list(model.weights.keys())

    def run(*args: torch.Tensor) -> torch.Tensor:
        ws = {"weights." + n: w for n, w in zip(names, args)}
        with _reparametrize_module(model, ws):
            return model() if index is None else model.batch_objective(args[-1])

    inputs = [model.weights[n].detach() for n in names]
    if index is not None:
        inputs.append(index)
    return _guarded_trace(model, run, inputs)


def _guarded_trace(model: CompiledModel, fn, inputs: list[torch.Tensor]) -> fx.GraphModule:
    """make_fx of fn, each op annotated with its cells, any host read of an input refused."""
    model.tracing = True
    try:
        with fx_traceback.preserve_node_meta(), HostReadGuard():
            return make_fx(fn)(*inputs)
    finally:
        model.tracing = False


__all__ = ["Program", "Segment", "weight_points"]
