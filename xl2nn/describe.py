"""A readable account of a workbook's computation: each sheet's formula families as layers,
and a compiled model's inputs, layers and op count."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from .cells import Area
from .compiler.lower import CompiledModel
from .formula.ast import ArrayLit, Binary, Call, Node, Number, Ref, Unary, walk
from .functions import FUNCTIONS
from .ir.families import Family
from .ir.graph import Graph
from .ir.patterns import is_relu  # noqa: F401  (train.py imports it from here)
from .naming import layer_name
from .ranges import merge_areas, ranges_text


class _OpCounter(TorchFunctionMode):
    """Counts torch calls that compute something. A function-level mode, not a dispatch
    mode: entering a dispatch mode imports torch._dynamo, which costs 2 s on every inspect."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") not in _FREE:
            self.count += 1
        return func(*args, **(kwargs or {}))


# Attribute reads and views compute nothing; they are not "tensor ops" a reader cares about.
_FREE = {"__get__", "__getitem__", "reshape", "view", "narrow", "expand", "expand_as", "broadcast_to",
         "squeeze", "unsqueeze", "t", "transpose", "permute", "select", "flatten", "detach", "contiguous",
         "dim", "size", "numel", "requires_grad_", "__len__"}


def _flat_calls(node: Node, plans: dict) -> list[str]:
    """Non-differentiable functions in `node` whose arguments read a parameter-dependent cell."""
    out = []
    for n in walk(node):
        if isinstance(n, Call) and n.name in FUNCTIONS and not FUNCTIONS[n.name].differentiable:
            if any(isinstance(r, Ref) and r in plans and plans[r].const is None for r in walk(n)):
                out.append(n.name)
    return sorted(set(out))


def count_ops(model: CompiledModel) -> int:
    with torch.no_grad(), _OpCounter() as counter:
        model()
    return counter.count


@dataclass
class Layer:
    cells: str          # the family's range (a group's rectangles)
    formula: str        # as written in its first cell
    layer: str          # what it is: 'matmul 20×4 · 4×3', 'ReLU', 'mean'
    shape: str          # its output: '20×3', '891' (a run of cells), 'scalar'
    families: int = 1   # families on this line (copies whose formulas differ only in offsets)


@dataclass
class Summary:
    inputs: list[str] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    formula_cells: int = 0
    families: int = 0
    ops: int = 0
    # Functions without a gradient (ROUND, COUNTIF, ...) applied to what depends on the
    # parameters: name -> the cells. Autograd gives zero through them, as the math does.
    flat: dict[str, list[str]] = field(default_factory=dict)


def summarize(model: CompiledModel) -> Summary:
    s = Summary()
    seen_inputs = set()
    named: list[tuple[Family, str]] = []
    for step in model.steps:
        fam = step.family
        for ref, plan in step.plans.items():
            if plan.const is not None and plan.const.shape[0] > 1 and ref not in seen_inputs:
                seen_inputs.add(ref)
                shape = tuple(plan.const.shape)
                area = ref.area_at(int(fam.rows[0]), int(fam.cols[0]))
                first, last = area, ref.area_at(int(fam.rows[-1]), int(fam.cols[-1]))
                span = f"{first.sheet}!{first.a1.split(':')[0]}:{last.a1.split(':')[-1]}"
                s.inputs.append(f"{span}  {shape[0]}×{shape[1] * shape[2]} constant")
        named.append((fam, layer_name(fam, model.graph, model)))
        for name in _flat_calls(fam.ast, step.plans):
            s.flat.setdefault(name, []).append(str(fam.area))
    s.layers = [layer for _, layer in grouped_layers(named)]    # an OFFSET per row: one line
    s.formula_cells = sum(model.graph.families[f].size for f in model.needed)
    s.families = len(model.steps)
    s.ops = count_ops(model)
    return s


def out_shape(fam: Family) -> str:
    """'20×3' for an array formula's range or a filled rectangle, '891' for a run, 'scalar'."""
    if fam.size == 1:
        return "scalar"
    h, w = fam.area.shape
    if fam.array is not None or (h > 1 and w > 1 and h * w == fam.size):
        return f"{h}×{w}"
    return str(fam.size)


def reading_order(graph: Graph) -> list[int]:
    """The families in dependency order, and among those ready the one on the earliest sheet,
    topmost then leftmost: a sheet's listing reads like the sheet (the graph's own order is
    whatever its stack gave)."""
    sheets = {name: i for i, name in enumerate(dict.fromkeys(f.sheet for f in graph.families))}
    key = {f.id: (sheets[f.sheet], f.area.r1, f.area.c1, f.id) for f in graph.families}
    users: dict[int, list[int]] = {f.id: [] for f in graph.families}
    waiting = {f.id: 0 for f in graph.families}
    for f in graph.families:
        for d in f.deps - {f.id} - set(graph.cycle_of(f.id) or ()):     # a cycle's cells: in reading order
            users[d].append(f.id)
            waiting[f.id] += 1
    ready = [key[f] for f, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        fid = heapq.heappop(ready)[-1]
        order.append(fid)
        for u in users[fid]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, key[u])
    return order if len(order) == len(graph.families) else list(graph.order)


def sheet_layers(graph: Graph, order: list[int] | None = None) -> dict[str, list[Layer]]:
    """Each sheet's formula families as layers, in dependency order. Three or more single-cell
    families that differ only in where they read (a max-pool's windows, an OFFSET per row, a
    recurrence split into cells) share one line: their cells merged into rectangles."""
    named = [(graph.families[f], layer_name(graph.families[f], graph))
             for f in (order if order is not None else reading_order(graph))]
    out: dict[str, list[Layer]] = {}
    for fam, layer in grouped_layers(named):
        out.setdefault(fam.sheet, []).append(layer)
    return out


def grouped_layers(named: list[tuple[Family, str]]) -> list[tuple[Family, Layer]]:
    """Families with their layer names as lines, in the order given: three or more single-cell
    families of one sheet that differ only in where they read, or copies of a one-row (one-column)
    array formula (an OFFSET row per rating), share one line, where the first of them is."""
    groups: dict[tuple, list[Family]] = {}
    structures: dict[int, tuple] = {}       # copies share their AST object: one walk each
    for fam, name in named:
        if fam.size == 1 and fam.array is None:
            if id(fam.ast) not in structures:
                structures[id(fam.ast)] = _structure(fam.ast)
            groups.setdefault((fam.sheet, structures[id(fam.ast)], name), []).append(fam)
        elif fam.array is not None and 1 in fam.array.shape:    # one array formula entered per row
            groups.setdefault((fam.sheet, id(fam.ast), name, fam.array.shape), []).append(fam)
    grouped = {id(f): members for members in groups.values() if len(members) >= 3 for f in members}
    out: list[tuple[Family, Layer]] = []
    for fam, name in named:
        members = grouped.get(id(fam), [fam])
        if fam is not members[0]:
            continue                # its line is where the group's first family is
        if len(members) == 1:
            layer = Layer(str(fam.area), fam.formula, name, out_shape(fam))
        else:
            rects = merge_areas(m.area for m in members)
            layer = Layer(ranges_text(rects, 3), fam.formula, name,
                          _group_shape(rects, sum(m.size for m in members)), len(members))
        out.append((fam, layer))
    return out


def _group_shape(rects: list[Area], cells: int) -> str:
    if len(rects) == 1 and rects[0].size == cells:
        h, w = rects[0].shape
        return f"{h}×{w}" if h > 1 and w > 1 else str(cells)
    return f"{cells} cells"


def _structure(node: Node) -> tuple:
    """A formula's shape with where it reads and its numbers left out: MAX(I2:J3) and
    MAX(K2:L3), OFFSET($A$1,5,0) and OFFSET($A$1,6,0) are one structure."""
    if isinstance(node, Ref):
        return ("ref", node.sheet, node.shape)
    if isinstance(node, Number):
        return ("number",)
    if isinstance(node, Call):
        return ("call", node.name, tuple(_structure(a) for a in node.args))
    if isinstance(node, Binary):
        return ("binary", node.op, _structure(node.left), _structure(node.right))
    if isinstance(node, Unary):
        return ("unary", node.op, _structure(node.arg))
    if isinstance(node, ArrayLit):
        return ("array", tuple(tuple(_structure(x) for x in row) for row in node.rows))
    return ("leaf", node)
