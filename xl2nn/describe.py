"""A readable account of a compiled model: its inputs, its layers, its op count."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from .compiler.lower import CompiledModel
from .formula.ast import Binary, Call, Node, Number, Ref, walk
from .functions import FUNCTIONS
from .ir.families import Family
from .ir.patterns import is_relu


def layer_name(fam: Family, model: CompiledModel) -> str:
    """Name the common spreadsheet idioms as the layers they are."""
    node = fam.ast
    plans = next(s.plans for s in model.steps if s.family is fam)

    def kind(ref: Node) -> str:
        if not isinstance(ref, Ref):
            return "expr"
        p = plans.get(ref)
        if p is None:
            return "expr"
        if p.const is not None:
            return "const"
        return "param" if p.producer >= len(model.graph.families) else "hidden"

    if isinstance(node, Call) and node.name == "SUMPRODUCT" and len(node.args) == 2:
        a, b = node.args
        if isinstance(a, Ref) and isinstance(b, Ref):
            h, w = _shape(plans[b])[1:]
            return f"linear {h * w}→1 ({kind(a)} · {kind(b)})"
    if isinstance(node, Call) and node.name == "MMULT" and len(node.args) == 2:
        a, b = node.args
        if isinstance(a, Ref) and isinstance(b, Ref):
            sa, sb = _shape(plans[a]), _shape(plans[b])
            return f"matmul {sa[1]}×{sa[2]} · {sb[1]}×{sb[2]}"
        return "matmul"
    if is_relu(node):
        inner = next((a for a in node.args if a != Number(0.0)), None) if isinstance(node, Call) \
            and node.name == "MAX" else None
        conv = _window(inner, fam) if inner is not None else None
        return f"{conv} + ReLU" if conv else "ReLU"
    conv = _window(node, fam)
    if conv:
        return conv
    if isinstance(node, Binary) and node.op == "^" and isinstance(node.right, Number) and node.right.value == 2:
        if isinstance(node.left, Binary) and node.left.op == "-":
            return "squared error"
        return "square"
    if isinstance(node, Call) and node.name == "AVERAGE":
        return "mean"
    if isinstance(node, Call) and node.name in ("SUM", "EXP", "LN", "TANH", "SQRT", "MAX", "MIN"):
        return node.name.lower()
    if isinstance(node, Binary) and node.op in "+-*/":
        return {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}[node.op]
    if isinstance(node, Call):
        return node.name
    return "expression"


def _window(node: Node, fam: Family) -> str | None:
    """SUM(window*kernel) or SUMPRODUCT(window,kernel) over a rectangle of cells, the window
    sliding with the cell and the kernel fixed: a 2-D convolution, 'conv 3×3'."""
    if not isinstance(node, Call) or fam.size < 2:
        return None
    if node.name == "SUM" and len(node.args) == 1 and isinstance(node.args[0], Binary) \
            and node.args[0].op == "*":
        pair = (node.args[0].left, node.args[0].right)
    elif node.name == "SUMPRODUCT" and len(node.args) == 2:
        pair = node.args
    else:
        return None
    if not all(isinstance(r, Ref) for r in pair):
        return None
    moving = [r for r in pair if not (r.r1_abs or r.c1_abs or r.r2_abs or r.c2_abs)]
    fixed = [r for r in pair if r.r1_abs and r.c1_abs and r.r2_abs and r.c2_abs]
    if len(moving) != 1 or len(fixed) != 1 or moving[0].shape != fixed[0].shape:
        return None
    h, w = fixed[0].shape
    if h < 2 or w < 2 or len(set(fam.rows.tolist())) < 2 or len(set(fam.cols.tolist())) < 2:
        return None
    return f"conv {h}×{w}"


def _shape(plan) -> tuple[int, ...]:
    if plan.const is not None:
        return tuple(plan.const.shape)
    if plan.view is not None:
        return tuple(plan.view[0])
    return tuple(plan.index.shape)


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
    cells: str
    formula: str
    layer: str
    shape: str


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
        out = fam.array.shape if fam.array is not None else (fam.size,)
        s.layers.append(Layer(str(fam.area), fam.formula, layer_name(fam, model),
                              "×".join(str(x) for x in out) if fam.size > 1 else "scalar"))
        for name in _flat_calls(fam.ast, step.plans):
            s.flat.setdefault(name, []).append(str(fam.area))
    s.formula_cells = sum(model.graph.families[f].size for f in model.needed)
    s.families = len(model.steps)
    s.ops = count_ops(model)
    return s
