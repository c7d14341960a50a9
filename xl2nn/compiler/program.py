"""The compiled model as a straight-line program: one trace of the interpreter, then rewrites.

`CompiledModel.forward` interprets each family's formula over Excel values (kinds, text,
errors) on every call. Training needs none of that: the parameters only ever change numbers.
So the forward is traced once with real tensors (torch.fx's make_fx) into an fx graph of aten
ops, the graph is simplified (view chains, bool round trips, IF-ReLU, constant literals),
and training runs that graph.

The trace is right by construction: while it runs, `HostReadGuard` refuses every read of a
parameter-dependent number into Python or NumPy (a function with no torch form for it), so
nothing that depends on the weights can be frozen into a constant. A model that needs such a
read runs in the interpreter instead, which recomputes every cell on every call; `fallback`
says which cells and function. `check()` compares the two at several weight points: verify
and the tests call it, nothing depends on it.
"""
from __future__ import annotations

import math

import torch
import torch.fx.traceback as fx_traceback
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module

from .hostread import HostRead, HostReadGuard
from ..errors import UnsupportedFormula
from .lower import CompiledModel
from .rewrites import FREE, optimise

# Two results this far apart (relative) mean the trace did not capture the interpreter.
TRACE_RTOL = 1e-9


class Program(nn.Module):
    """objective = program(); batch estimate = program.batch(index). Shares the model's Parameters."""

    def __init__(self, model: CompiledModel) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.weights.keys())
        self._batches = nn.ModuleDict()      # one traced program per batch size ...
        self._untraced: set[str] = set()     # ... or, where its trace was wrong, the interpreter
        self._batches_compiled: dict[str, object] = {}
        self.full: fx.GraphModule | None = None
        self.fallback = ""          # why the interpreter runs instead (empty: the trace runs)
        self.compiled = False       # torch.compile'd (see compile())
        try:
            self.full = optimise(_trace(model, None))
        except HostRead as exc:     # a function with no torch form on the parameter path
            self.fallback = exc.reason()
        except Exception as exc:    # a construct the tracer cannot follow: interpret instead
            self.fallback = f"not traceable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"

    @property
    def traced(self) -> bool:
        """True when nothing runs through the interpreter (float32 needs that)."""
        return self.full is not None and not self._untraced

    def _weights(self) -> list[torch.Tensor]:
        return [self.model.weights[n] for n in self.names]

    def forward(self) -> torch.Tensor:
        if self.full is None:
            return self.model()
        if self.compiled:
            return self._full_compiled(*self._weights())
        return self.full.forward(*self._weights())   # no hooks: skip Module.__call__

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

    def check(self, points: int = 4, generator: torch.Generator | None = None) -> float:
        """Largest relative difference to the interpreter, at the current weights and at
        `points - 1` random perturbations of them; the weights are left as they were."""
        worst = 0.0
        if self.full is None:
            return worst
        generator = generator or torch.Generator().manual_seed(0)
        with torch.no_grad():
            saved = [w.detach().clone() for w in self._weights()]
            try:
                for scale in [0.0] + [0.3 * (k + 1) for k in range(points - 1)]:
                    for w, s in zip(self._weights(), saved):
                        noise = torch.rand(s.shape, generator=generator, dtype=torch.float64) - 0.5
                        w.copy_(s + scale * noise.to(s.device, s.dtype) * s.abs().clamp_min(1.0))
                    try:
                        b = float(self.model())
                    except UnsupportedFormula:      # ISNA of a computed error: nothing to compare
                        continue
                    a = float(self.full(*self._weights()))
                    if math.isnan(a) != math.isnan(b):      # an error on one side only
                        worst = math.inf
                    elif a != b and not math.isnan(a):
                        worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
            finally:
                for w, s in zip(self._weights(), saved):
                    w.copy_(s)
        return worst

    def count_ops(self) -> int:
        """Tensor ops per forward (views and slices, which compute nothing, not counted)."""
        if self.full is None:
            return 0
        return sum(1 for n in self.full.graph.nodes if n.op == "call_function" and n.target not in FREE)


def _trace(model: CompiledModel, index: torch.Tensor | None) -> fx.GraphModule:
    names = list(model.weights.keys())

    def run(*args: torch.Tensor) -> torch.Tensor:
        ws = {"weights." + n: w for n, w in zip(names, args)}
        with _reparametrize_module(model, ws):
            return model() if index is None else model.batch_objective(args[-1])

    inputs = [model.weights[n].detach() for n in names]
    if index is not None:
        inputs.append(index)
    model.tracing = True
    try:
        with fx_traceback.preserve_node_meta(), HostReadGuard():
            return make_fx(run)(*inputs)
    finally:
        model.tracing = False


__all__ = ["Program", "TRACE_RTOL"]
