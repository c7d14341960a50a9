"""Lowering: the parameter-dependent families become a torch.nn.Module.

Everything the objective needs that does not depend on the parameters is folded
to constant tensors first (by the grid recalculation); what is left runs as one
tensor op per family. A reference inside the module reads its producer's output
through a view when the cells it needs are evenly spaced (the usual case), or a
gather otherwise.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.fx.traceback as fx_traceback
from torch import nn

from ..arrays import unique
from ..cells import Area, CellError, a1, cell_name
from ..errors import BadInput, CircularReference, UnsupportedFormula
from ..formula.ast import Call, Ref
from ..functions import VOLATILE
from ..functions.values import NUM, Val
from ..ir.families import Family
from ..ir.graph import Graph, cycle_text, grow_owners
from ..ir.references import has_targets, read_refs
from ..ranges import ranges_text
from ..reader.workbook import Workbook
from .grid import Grids, error_source, recalculate, unsupported
from .hostread import HostRead
from .leaves import formula_cells, loosen_parameters
from .interpret import EvalContext, evaluate
from .model import ModelSpec
from .spill import spill_mismatch
from ..functions.arrays import Ragged, cell_by_cell
from .references import Areas, RaggedReference, ReferenceTexts, Where, assemble, block_indices
from .resolve import resolve_references, widen_moving


def param_name(area: Area) -> str:
    """Stable parameter name: sheet and range, e.g. 'nnet_R4_AA5'."""
    sheet = re.sub(r"\W+", "_", area.sheet).strip("_") or "sheet"
    return f"{sheet}_{a1(area.r1, area.c1)}_{a1(area.r2, area.c2)}"


@dataclass
class Plan:
    """How one reference in one family reads its cells inside forward()."""

    kind: int | np.ndarray
    text: np.ndarray | None
    const: torch.Tensor | None = None          # all cells constant
    producer: int = -1                         # one dynamic producer ...
    view: tuple[tuple[int, ...], tuple[int, ...], int] | None = None   # ... read as a strided block
    viewer: Callable[[torch.Tensor], torch.Tensor] | None = None       # (the views that read it)
    index: torch.Tensor | None = None          # ... or gathered
    sources: list[int] | None = None           # several producers: cat(const, *sources)[index]

    def read(self, outs: dict[int, torch.Tensor]) -> Val:
        if self.const is not None:
            num = self.const
        elif self.sources is not None:
            num = torch.cat([self.const_flat] + [outs[p] for p in self.sources])[self.index]
        else:
            flat = outs[self.producer]
            if self.view is not None:
                num = self.viewer(flat)
            else:
                num = flat[self.index]
        return Val(num, self.kind, self.text, is_ref=True, exact=self.const is not None)

    const_flat: torch.Tensor | None = None


@dataclass
class Step:
    family: Family
    plans: dict[Ref, Plan]

    def producers(self) -> set[int]:
        """The families and parameters whose outputs this step reads."""
        out: set[int] = set()
        for plan in self.plans.values():
            if plan.const is None:
                out.update(plan.sources if plan.sources is not None else [plan.producer])
        return out


class CompiledModel(nn.Module):
    """The workbook's model. forward() returns the objective cell's value, or for a forward-only
    model (spec.result) that range's values, rows × columns.

    After a forward, `value(cell)` reads any cell the objective depends on. `weights` holds
    every leaf: the input ranges of a forward-only model (`input_names`), then the parameters.
    """

    def __init__(self, wb: Workbook, graph: Graph, spec: ModelSpec, grids: Grids,
                 needed: set[int], dynamic: list[int], device: torch.device) -> None:
        super().__init__()
        self.spec = spec
        self.workbook = wb
        self.graph = graph
        self.workbook = wb                   # the workbook compiled (parameter formulas cut loose)
        # RAND families the objective reads (dropout masks): forward() uses their saved values
        # (the sheet as it is: eval, verify) unless fresh_random, when each forward draws anew.
        self.fresh_random = False
        self.random_families: dict[int, torch.Tensor] = {}     # family id -> its saved values, flat
        self.loosened: list[tuple[str, int, int]] = []    # parameter cells that held formulas
        self.grids = grids
        self.needed = needed
        self.device_ = device
        n = len(graph.families)
        self.param_areas: dict[str, Area] = {}
        self.param_labels: dict[str, list[str]] = {}
        self.weights = nn.ParameterDict()
        self._pid: dict[str, int] = {}
        for k, area in enumerate(spec.leaves):
            name = param_name(area)
            values = np.array([[_number(grids.value(area.sheet, r, c), area.sheet, r, c, wb.path)
                                for c in range(area.c1, area.c2 + 1)] for r in range(area.r1, area.r2 + 1)])
            self.weights[name] = nn.Parameter(torch.tensor(values, dtype=torch.float64, device=device))
            self.param_areas[name] = area
            sheet = wb.sheets[area.sheet]
            self.param_labels[name] = [sheet.label(r, c) or a1(r, c) for r in range(area.r1, area.r2 + 1)
                                       for c in range(area.c1, area.c2 + 1)]
            self._pid[name] = n + k
        self.input_names = [param_name(area) for area in spec.inputs]
        owner, local = _model_owners(graph, spec.leaves, n)
        dyn_ids = set(dynamic) | set(self._pid.values())
        # Computed references (OFFSET, INDIRECT) are planned when their positions are known:
        # once for positions that do not depend on the parameters (traced: a gather).
        self._owners = (owner, local, dyn_ids)
        self._area_plans: dict[tuple, Plan] = {}
        self._area_reads: dict[int, tuple[Areas, list[tuple[np.ndarray, Plan]]]] = {}
        self._area_memo: dict[int, dict[int, Areas]] = {}   # family -> its constant positions
        self._texts = ReferenceTexts(wb)
        self._steps = [Step(graph.families[f], self._plans(graph.families[f], owner, local, dyn_ids, grids))
                       for f in dynamic]
        # A forward-only model returns its result range read as a reference to it would be.
        self._result = None if spec.result is None else self._plan(
            spec.result.sheet, *_block_index(spec.result), owner, local, dyn_ids, grids)
        sheet, row, col = spec.objective
        fam = graph.family_at(sheet, row, col)
        if fam is None:
            raise BadInput(f"{wb.path}: the objective {cell_name(sheet, row, col)} is not a formula")
        self._objective = (fam.id, int(graph.owners.local[sheet][row, col]))
        self._constant_objective = fam.id not in dynamic
        self._literals: dict = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.tracing = False
        self.terms_of, self.not_decomposable = _decomposition(fam, self._steps, grids)

    @property
    def row_count(self) -> int:
        """How many terms (table rows) the objective averages or sums; 0 if it does neither."""
        return 0 if self.terms_of is None else self.terms_of[2]

    def batch_objective(self, index: torch.Tensor) -> torch.Tensor:
        """The objective estimated on the rows `index` (a mean or sum over rows only).

        AVERAGE: the mean of those rows' terms. SUM / SUMSQ: their sum scaled by n/len(index),
        an unbiased estimate of the whole sum, so one learning rate suits both.
        """
        if self.terms_of is None:
            raise BadInput(f"{self.workbook.path}: --batch-size needs an objective that is a mean or sum "
                           f"over rows, e.g. =AVERAGE(AH4:AH715); {self.spec.objective_name} is "
                           f"{self.not_decomposable}")
        self.forward()
        step, ref, n = self.terms_of
        terms = step.plans[ref].read(self.outputs).num.reshape(-1)[index]
        func = step.family.ast.name
        if func == "AVERAGE":
            return terms.mean()
        if func == "SUMSQ":
            terms = terms * terms
        return terms.sum() * (n / len(index))

    def _plans(self, fam: Family, owner: dict, local: dict, dyn_ids: set[int], grids: Grids) -> dict[Ref, Plan]:
        plans: dict[Ref, Plan] = {}
        rows, cols = fam.rows, fam.cols
        for ref in dict.fromkeys(read_refs(fam.ast)):     # formula order: the same listing every run
            R, C = grids.index(ref, rows, cols)
            plans[ref] = self._plan(ref.sheet, R, C, owner, local, dyn_ids, grids)
        return plans

    def _plan(self, sheet: str, R: np.ndarray, C: np.ndarray, owner: dict, local: dict, dyn_ids: set[int],
              grids: Grids) -> Plan:
        """How to read the cells (sheet, R, C): constants, a view or gather of one producer, or both."""
        base = grids.read(sheet, R, C, torch.device("cpu"))
        if sheet not in owner:
            return Plan(base.kind, base.text, const=base.num.to(self.device_))
        og, lg = owner[sheet], local[sheet]
        inside = (R < og.shape[0]) & (C < og.shape[1]) & (R >= 0) & (C >= 0)
        Rc, Cc = np.where(inside, R, 0), np.where(inside, C, 0)
        own = np.where(inside, og[Rc, Cc], -1)
        is_dyn = np.isin(own, list(dyn_ids))
        if not is_dyn.any():
            return Plan(base.kind, base.text, const=base.num.to(self.device_))
        producers = unique(own[is_dyn])
        loc = lg[Rc, Cc]
        if len(producers) == 1 and is_dyn.all():
            view = _affine(loc)
            plan = Plan(base.kind, base.text, producer=int(producers[0]), view=view)
            if view is not None:
                plan.viewer = _viewer(*view, self._producer_size(int(producers[0])))
            else:
                plan.index = torch.as_tensor(loc, device=self.device_)
            return plan
        # Mixed: constants and one or more producers, joined then gathered.
        const_vals = base.num.numpy()[~is_dyn]
        offsets, total = {}, len(const_vals)
        for p in producers:
            offsets[int(p)] = total
            total += self._producer_size(int(p))
        idx = np.zeros(own.shape, dtype=np.int64)
        idx[~is_dyn] = np.arange(len(const_vals))
        for p, off in offsets.items():
            m = own == p
            idx[m] = off + loc[m]
        return Plan(base.kind, base.text, sources=[int(p) for p in producers],
                    index=torch.as_tensor(idx, device=self.device_),
                    const_flat=torch.as_tensor(const_vals, device=self.device_))

    def read_areas(self, areas: Areas, outs: dict[int, torch.Tensor], reader: Family) -> Val:
        """The cells computed references land on, from the producers' outputs and the constants:
        a gather, planned once per set of positions (the gradient reaches the cells read)."""
        known = self._area_reads.get(id(areas))
        if known is not None and known[0] is areas:        # constant positions: planned before
            return assemble([(w, p.read(outs)) for w, p in known[1]], areas, self.device_)
        grids = self.grids
        rows = {s: g.shape[0] for s, g in grids.num.items()}
        cols = {s: g.shape[1] for s, g in grids.num.items()}
        parts, plans = [], []
        for sheet, which, R, C in block_indices(areas, rows, cols):
            if not len(which):
                continue
            key = (sheet, R.shape, R.tobytes(), C.tobytes())
            plan = self._area_plans.get(key)
            if plan is None:
                plan = self._plan(sheet, R, C, *self._owners, grids)
                self._area_plans[key] = plan
            self._check_ready(plan, reader, sheet, R, C)
            plans.append((which, plan))
            parts.append((which, plan.read(outs)))
        if any(areas is m for m in self._area_memo.get(reader.id, {}).values()):   # constant positions
            self._area_reads[id(areas)] = (areas, plans)
        return assemble(parts, areas, self.device_)

    def _check_ready(self, plan: Plan, reader: Family, sheet: str, R: np.ndarray, C: np.ndarray) -> None:
        """Positions that move with the weights may land on cells computed after the reader, or
        from it (a circular reference at these weights): an error, never a stale value."""
        if plan.const is not None:
            producers = set(np.unique(_owner_at(self._owners[0], sheet, R, C)).tolist()) - {-1}
            late = producers - reader.deps      # constant families: computed only if it depends on them
        else:
            late = set(plan.sources if plan.sources is not None else [plan.producer]) - reader.deps \
                - set(self._pid.values())
        if late:
            other = self.graph.families[min(late)]
            raise UnsupportedFormula(f"it lands on {other.area} ({other.formula}), which is not computed before it "
                                     "(a circular reference at these weights)")

    def _producer_size(self, pid: int) -> int:
        n = len(self.graph.families)
        if pid < n:
            return self.graph.families[pid].size
        return list(self.param_areas.values())[pid - n].size

    def forward(self) -> torch.Tensor:
        outs = self.initial_outs()
        self.run_steps(outs, self._steps)
        self.outputs = outs
        return self.objective_of(outs)

    @property
    def steps(self) -> list[Step]:
        """The parameter-dependent families in evaluation order, one step each."""
        return list(self._steps)

    def initial_outs(self) -> dict[int, torch.Tensor]:
        """The outputs before any step: each parameter range, flat."""
        return {pid: self.weights[name].reshape(-1) for name, pid in self._pid.items()}

    def run_steps(self, outs: dict[int, torch.Tensor], steps: list[Step]) -> None:
        """Evaluate `steps`, reading and writing their outputs in `outs`."""
        for step in steps:
            fam = step.family
            where = Where(fam.sheet, fam.rows, fam.cols, lambda areas, f=fam: self.read_areas(areas, outs, f),
                          self._texts, fam.array, self._area_memo.setdefault(fam.id, {}))
            ctx = EvalContext(resolve=lambda ref, s=step: s.plans[ref].read(outs), device=self.device_,
                              checked=False, literals=self._literals, where=where)
            if fam.id in self.random_families and not self.fresh_random:
                outs[fam.id] = self.random_families[fam.id]
                continue
            ctx.random = self.fresh_random
            with self._origin(step.family):
                try:
                    v = evaluate(step.family.ast, ctx)
                except HostRead as exc:     # tracing: say which cells could not be traced
                    exc.family = step.family
                    raise
                except Ragged:              # copies whose arrays differ in size: one cell at a time
                    if fam.array is not None:
                        raise UnsupportedFormula(f"{self.workbook.path}: {fam.area} ({fam.formula}): its arrays "
                                                 "change size with the weights") from None
                    try:
                        parts = cell_by_cell(fam.ast, ctx, len(fam.rows), evaluate)
                    except HostRead as exc:
                        exc.family = fam
                        raise
                    except UnsupportedFormula as exc:
                        raise UnsupportedFormula(f"{self.workbook.path}: {fam.area} ({fam.formula}): {exc}") from None
                    v = Val(torch.cat([p.num[:1, :1, :1] for p in parts]), NUM)
                except RaggedReference:
                    raise UnsupportedFormula(f"{self.workbook.path}: {step.family.area} ({step.family.formula}): "
                                             "its copies' computed references land on blocks of different sizes, "
                                             "which a model does not take") from None
                except UnsupportedFormula as exc:   # e.g. ISNA of a computed error: name the cells
                    raise UnsupportedFormula(f"{self.workbook.path}: {step.family.area} "
                                             f"({step.family.formula}): {exc}") from None
                why = spill_mismatch(self.workbook, step.family, v)
                if why is not None:         # a dynamic array whose size follows the weights
                    raise UnsupportedFormula(f"{self.workbook.path}: {step.family.area} ({step.family.formula}): "
                                             f"{why}; a model keeps the spill range the file saved")
                outs[step.family.id] = _flat_output(step.family, v)

    def dropout_cells(self) -> list[str]:
        """The RAND cells the objective reads (dropout masks), as ranges."""
        return [str(self.graph.families[f].area) for f in self.random_families]

    @property
    def objective_family(self) -> int:
        return self._objective[0]

    def result_producers(self) -> set[int]:
        """The families (and leaves) whose outputs forward()'s result is read from."""
        plan = self._result
        if plan is None:
            return {self._objective[0]}
        if plan.const is not None:
            return set()
        return set(plan.sources) if plan.sources is not None else {plan.producer}

    def objective_of(self, outs: dict[int, torch.Tensor]) -> torch.Tensor:
        """What forward() returns: the objective cell, or the result range (rows × columns)."""
        if self._result is not None:
            return self._result.read(outs).num.reshape(self.spec.result.shape)
        fid, local = self._objective
        if self._constant_objective:
            sheet, row, col = self.spec.objective
            return torch.tensor(float(self.grids.num[sheet][row, col]), dtype=torch.float64, device=self.device_)
        return outs[fid][local]

    def _origin(self, fam: Family):
        """While traced (Program), each op records the family it computes: generated code names
        its cells. A no-op otherwise."""
        if not self.tracing:
            return nullcontext()
        return fx_traceback.annotate({"cells": f"{fam.area} {fam.formula}"})

    # -- reading results
    def value(self, cell: str) -> torch.Tensor:
        """A cell's value from the last forward ('nnet!AE10' or 'AE10' on the model's sheet)."""
        from .model import parse_cell_name
        sheet, row, col = parse_cell_name(self.workbook, cell, self.spec.sheet)
        fam = self.graph.family_at(sheet, row, col)
        if fam is not None and fam.id in self.outputs:
            return self.outputs[fam.id][int(self.graph.owners.local[sheet][row, col])]
        return torch.tensor(float(self.grids.num[sheet][row, col]), dtype=torch.float64)

    @property
    def op_families(self) -> list[Family]:
        return [s.family for s in self._steps]


def _decomposition(fam: Family, steps: list[Step], grids: Grids):
    """((step, ref, n), None) when the objective is AVERAGE/SUM/SUMSQ of one range of plain
    numbers that depends on the parameters, else (None, why not)."""
    ast = fam.ast
    text = fam.formula
    if fam.size != 1 or not isinstance(ast, Call) or ast.name not in ("AVERAGE", "SUM", "SUMSQ") \
            or len(ast.args) != 1 or not isinstance(ast.args[0], Ref):
        return None, f"{text}, not AVERAGE, SUM or SUMSQ of one range"
    step = next((s for s in steps if s.family is fam), None)
    if step is None:
        return None, f"{text}, which does not depend on the parameters"
    ref = ast.args[0]
    plan = step.plans[ref]
    if not isinstance(plan.kind, int) or plan.kind != NUM:
        return None, f"{text}, over a range that is not all numbers"
    return (step, ref, int(grids.index(ref, fam.rows, fam.cols)[0].size)), None


def _block_index(area: Area) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every cell of `area`, shaped (1, h, w) as one reader's reference."""
    h, w = area.shape
    rows = np.arange(area.r1, area.r2 + 1).reshape(1, h, 1)
    cols = np.arange(area.c1, area.c2 + 1).reshape(1, 1, w)
    return np.ascontiguousarray(np.broadcast_to(rows, (1, h, w))), np.ascontiguousarray(np.broadcast_to(cols, (1, h, w)))


def _flat_output(fam: Family, v: Val) -> torch.Tensor:
    num = v.num
    if fam.array is None:
        out = num.reshape(-1) if num.shape[1:] == (1, 1) else num[:, 0, 0]
        return out.expand(len(fam.rows)) if out.shape[0] != len(fam.rows) else out
    h, w = fam.array.shape
    block = num[0]
    if tuple(block.shape) != (h, w):
        block = block.expand(h, w)   # a 1-wide result repeats across the range, as in Excel
    return block.reshape(-1)


def _affine(idx: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """If idx[i,j,k] = base + i*s0 + j*s1 + k*s2 with non-negative strides, a view does it."""
    base = int(idx[0, 0, 0])
    strides = []
    for axis in range(3):
        if idx.shape[axis] > 1:
            sl = [0, 0, 0]
            sl[axis] = 1
            strides.append(int(idx[tuple(sl)]) - base)
        else:
            strides.append(0)
    if min(strides) < 0:
        return None
    grid = np.indices(idx.shape)
    expected = base + sum(g * s for g, s in zip(grid, strides))
    if not np.array_equal(expected, idx):
        return None
    return tuple(idx.shape), tuple(strides), base


def _viewer(size: tuple[int, ...], stride: tuple[int, ...], offset: int, n: int
          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The strided block (size, stride, offset) of a flat tensor of n entries, built from
    narrow/view/slice/expand where possible: their backward is a cheap copy, while
    as_strided's backward goes through a generic and much slower path."""
    dims = [(k, s, t) for k, (s, t) in enumerate(zip(size, stride)) if s > 1 and t > 0]
    shape = [s if (s > 1 and t > 0) else 1 for s, t in zip(size, stride)]
    expand = tuple(shape) != tuple(size)
    contiguous = all(t == (dims[i + 1][1] * dims[i + 1][2] if i + 1 < len(dims) else 1)
                     for i, (_, _, t) in enumerate(d for d in dims))
    span = int(np.prod([s for _, s, _ in dims])) if dims else 1
    if contiguous:
        if offset == 0 and span == n:
            core = lambda x: x.view(shape)                                      # noqa: E731
        else:
            core = lambda x: x.narrow(0, offset, span).view(shape)              # noqa: E731
    elif len(dims) == 1:
        (_, s, t), = dims
        core = lambda x: x[offset:offset + (s - 1) * t + 1:t].view(shape)       # noqa: E731
    elif len(dims) == 2 and dims[1][2] == 1 and offset + dims[0][1] * dims[0][2] <= n:
        (_, s0, t0), (_, s1, _) = dims
        core = lambda x: x.narrow(0, offset, s0 * t0).view(s0, t0)[:, :s1].reshape(shape)  # noqa: E731
    else:
        return lambda x: x.as_strided(size, stride, x.storage_offset() + offset)
    if expand:
        return lambda x: core(x).expand(size)
    return core


def _owner_at(owner: dict, sheet: str, R: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Who owns each cell (sheet, R, C): a family, a parameter range, or -1."""
    og = owner.get(sheet)
    if og is None:
        return np.full(R.shape, -1)
    inside = (R < og.shape[0]) & (C < og.shape[1]) & (R >= 0) & (C >= 0)
    return np.where(inside, og[np.where(inside, R, 0), np.where(inside, C, 0)], -1)


def _model_owners(graph: Graph, params: list[Area], n: int):
    owner = {s: g.copy() for s, g in graph.owners.owner.items()}
    local = {s: g.copy() for s, g in graph.owners.local.items()}
    for k, area in enumerate(params):
        owner[area.sheet], local[area.sheet] = grow_owners(owner[area.sheet], local[area.sheet], area.r2, area.c2)
        hh, ww = area.shape
        owner[area.sheet][area.r1:area.r2 + 1, area.c1:area.c2 + 1] = n + k
        local[area.sheet][area.r1:area.r2 + 1, area.c1:area.c2 + 1] = np.arange(hh * ww).reshape(hh, ww)
    return owner, local


def _number(v: object, sheet: str, r: int, c: int, path: str) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadInput(f"{path}: parameter cell {cell_name(sheet, r, c)} holds {v!r}, not a number")
    return float(v)


def compile_model(wb: Workbook, graph: Graph, spec: ModelSpec, device: torch.device | None = None,
                  must_reach: bool = True, outputs: Sequence[tuple[str, int, int]] = ()) -> CompiledModel:
    """The model of `spec`. With must_reach, a model whose parameters do not reach its objective
    (nothing to train, no gradient) is refused, saying why. `outputs`: more formula cells the
    model computes besides the objective (read them with `value` after a forward)."""
    device = device or torch.device("cpu")
    for area in spec.inputs:
        for r, c in area.cells():
            f = graph.family_at(area.sheet, r, c)
            if f is not None:
                raise BadInput(f"{wb.path}: input cell {cell_name(area.sheet, r, c)} holds a formula "
                               f"({f.formula}); cut it loose first (compiler.leaves.cut_loose)")
    # Parameter cells initialised by formulas (=RAND()*2-1, =G6) start from their values; the
    # model is compiled from a copy of the workbook in which they are numbers (model.workbook).
    loosened = formula_cells(graph, spec.params)
    wb, graph, why = loosen_parameters(wb, graph, spec)
    if why:
        warnings.warn(ParameterFormulaWarning(why), stacklevel=2)
    resolve_references(wb, graph)       # where OFFSET, INDIRECT ... land: their dependencies
    sheet, row, col = spec.objective
    root = graph.family_at(sheet, row, col)
    if root is None:
        raise BadInput(f"{wb.path}: the objective {cell_name(sheet, row, col)} is not a formula cell")
    roots = [root]
    for cell in outputs:
        fam = graph.family_at(*cell)
        if fam is None:
            raise BadInput(f"{wb.path}: {cell_name(*cell)} is not a formula cell")
        roots.append(fam)
    if spec.result is not None:
        roots.extend(_families_in(wb, graph, spec.result))
    needed = graph.ancestors([f.id for f in roots])
    _refuse_cycles(wb, graph, spec, needed)
    # Which needed families read a leaf (an input or a parameter), directly or through others.
    dynamic = graph.dependents(graph.reading(spec.leaves, among=needed), within=needed)
    if widen_moving(wb, graph, spec.leaves, needed, dynamic):     # positions that move with the weights
        needed = graph.ancestors([f.id for f in roots])
        _refuse_cycles(wb, graph, spec, needed)
        dynamic = graph.dependents(graph.reading(spec.leaves, among=needed), within=needed)
    # RAND in cells that do not depend on the parameters (a dropout mask column): steps of the
    # model too, so that training can draw them afresh; their dependents join them.
    # (Not where RAND moves a computed reference: where that lands is worked out once.)
    random = {f for f in needed - dynamic if unsupported(graph.families[f]) == {"RAND"}
              and graph.families[f].array is None and not has_targets(graph.families[f].ast)}
    snapshots = _check_supported(wb, graph, needed, dynamic, random)
    if must_reach and root.id not in dynamic:
        params = ", ".join(str(a) for a in spec.leaves)
        why = f"no formula that {cell_name(sheet, row, col)} depends on reads {params}"
        if snapshots:
            why += (f"; it reads {'; '.join(snapshots)}, whose cells keep their cached values "
                    "(a snapshot), so parameters reached only through them are not seen")
        raise BadInput(f"{wb.path}: the parameters do not reach the objective {cell_name(sheet, row, col)}: {why}")
    recalc = recalculate(wb, graph, only=needed)
    _refuse_unordered(wb, graph, recalc.skipped, needed)
    grids = recalc.grids
    if random:
        dynamic = dynamic | graph.dependents(random, within=needed)
    order = [f for f in graph.order if f in dynamic]
    model = CompiledModel(wb, graph, spec, grids, needed, order, device)   # checks the parameter cells
    model.loosened = loosened
    model.random_families = {f: _saved(grids, graph.families[f], model.device_) for f in sorted(random)}
    value = grids.value(sheet, row, col)
    if isinstance(value, CellError) and spec.result is None:   # no gradient flows through an error
        raise BadInput(f"{wb.path}: the objective {cell_name(sheet, row, col)} is {value} at the workbook's "
                       f"weights; it comes from {error_source(graph, grids, sheet, row, col)}")
    if snapshots:
        warnings.warn(SnapshotWarning(
            f"{wb.path}: the model reads volatile functions' cached values as constants (Excel would "
            f"recompute them): {'; '.join(snapshots)}"), stacklevel=2)
    return model


def _refuse_unordered(wb: Workbook, graph: Graph, skipped: dict[int, str], needed: set[int]) -> None:
    """A family the model needs whose computed references could not be computed (they land on
    cells computed from it, or do what xl2nn does not) keeps a cached value: refused, naming it."""
    bad = [(f, why) for f, why in sorted(skipped.items()) if f in needed and has_targets(graph.families[f].ast)
           and not unsupported(graph.families[f])]
    if bad:
        f, why = bad[0]
        fam = graph.families[f]
        raise UnsupportedFormula(f"{wb.path}: the model needs {fam.area} ({fam.formula}), which xl2nn cannot "
                                 f"compute: {why.removeprefix('unsupported ')}"
                                 + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def _families_in(wb: Workbook, graph: Graph, area: Area) -> list[Family]:
    """The families computing the cells of `area`; a cell holding no formula is BadInput."""
    grid = graph.owners.owner.get(area.sheet)
    for r, c in area.cells():
        if grid is None or r >= grid.shape[0] or c >= grid.shape[1] or grid[r, c] < 0:
            raise BadInput(f"{wb.path}: {cell_name(area.sheet, r, c)} is not a formula cell")
    ids = unique(grid[area.r1:area.r2 + 1, area.c1:area.c2 + 1].reshape(-1))
    return [graph.families[int(f)] for f in ids]


class ParameterFormulaWarning(UserWarning):
    """Parameter cells hold formulas: their current values are the starting weights."""


class SnapshotWarning(UserWarning):
    """Cells of volatile functions (RAND, NOW, ...) enter the model as their cached values."""


def _refuse_cycles(wb: Workbook, graph: Graph, spec: ModelSpec, needed: set[int]) -> None:
    """A model that needs a circular reference is refused, naming its cells: without iterative
    calculation Excel cannot compute it, and with it the value is an iteration's end point, which
    xl2nn does not train through. A cycle beside the model does not matter."""
    cycles = graph.cycles_among(needed)
    if not cycles:
        return
    what = (f"the outputs {spec.result} depend" if spec.result is not None
            else f"the objective {spec.objective_name} depends")
    more = f" (and {len(cycles) - 1} more)" if len(cycles) > 1 else ""
    how = ("Excel iterates it (iterative calculation is on), and xl2nn does not compile a model through an "
           "iterated cycle" if wb.calc.iterate else "iterative calculation is off, so Excel cannot compute it")
    raise CircularReference(f"{wb.path}: {what} on a circular reference through {cycle_text(graph, cycles[0])}"
                            f"{more}: {how}; break the cycle, or make its cells constants or parameters")


def _saved(grids: Grids, fam: Family, device: torch.device) -> torch.Tensor:
    """A family's cells as the file saved them (its cached values, which the grid kept), flat."""
    rows, cols = fam.out_cells()
    num = grids.num[fam.sheet][rows, cols]
    return torch.as_tensor(np.ascontiguousarray(num), dtype=torch.float64, device=device)


def _check_supported(wb: Workbook, graph: Graph, needed: set[int], dynamic: set[int],
                     random: set[int] = frozenset()) -> list[str]:
    """Refuse functions xl2nn lacks; return the volatile ones the model reads as constants
    (RAND in `random` families is a step of its own: saved values, or fresh in training)."""
    missing: dict[str, list[str]] = {}
    snapshots: dict[str, list[str]] = {}
    for fid in needed:
        if fid in random:
            continue
        fam = graph.families[fid]
        names = unsupported(fam)
        if names and names <= VOLATILE and fid not in dynamic:
            snapshots.setdefault(", ".join(sorted(names)), []).append(str(fam.area))
            continue
        for name in names:
            missing.setdefault(name + (" (volatile, and it depends on the parameters)" if name in VOLATILE else ""),
                               []).append(str(fam.area))
    # Cells merged into rectangles: 400 one-cell OFFSET families read 'data!B2:B401', not 400 names.
    if missing:
        parts = [f"{name} (in {ranges_text(cells, 3)})" for name, cells in sorted(missing.items())]
        raise UnsupportedFormula(f"{wb.path}: the model uses functions xl2nn does not support: "
                                 + "; ".join(parts))
    return [f"{names} in {ranges_text(cells)}" for names, cells in sorted(snapshots.items())]


__all__ = ["CompiledModel", "ParameterFormulaWarning", "SnapshotWarning", "compile_model", "param_name"]
