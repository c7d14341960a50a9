"""Name a formula family as the layer it is: 'matmul 20×4 · 4×3', 'softmax over 3', 'ReLU'.

Works from the family and the graph alone (the shapes of what it reads come from its
references' areas), so `inspect` names every sheet's computation without a model; given a
compiled model, SUMPRODUCT layers also say what each side is (const · param).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .formula.ast import Binary, Call, Node, Number, Ref, Text, Unary, walk
from .ir.families import Family
from .ir.graph import Graph
from .ir.patterns import is_relu

if TYPE_CHECKING:
    from .compiler.lower import CompiledModel

_BINARY = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}
_PLAIN = ("SUM", "EXP", "LN", "TANH", "SQRT", "MAX", "MIN")


def layer_name(fam: Family, graph: Graph, model: CompiledModel | None = None) -> str:
    """The common spreadsheet idioms named as layers; otherwise the operation or function."""
    return _Namer(fam, graph, model).name(fam.ast)


class _Namer:
    def __init__(self, fam: Family, graph: Graph, model: CompiledModel | None) -> None:
        self.fam, self.graph, self.model = fam, graph, model
        self.at = (int(fam.rows[0]), int(fam.cols[0]))     # shapes as the first cell reads them

    def name(self, node: Node) -> str:
        inner = _activation_input(node)
        if inner is not None:
            act = _activation(node)
            core = self.core(inner) if not isinstance(inner, Ref) else None
            return f"{core} + {act}" if core else act
        return self.core(node) or self.fallback(node)

    def core(self, node: Node) -> str | None:
        """The linear-algebra layers (and softmax, losses); None when `node` is none of them."""
        conv = _window(node, self.fam)
        if conv:
            return conv
        if isinstance(node, Binary) and node.op == "+":
            # matmul(...) + b, SUMPRODUCT(...) + b: the layer, with its bias
            for side in (node.left, node.right):
                if _is_call(side, "MMULT", "SUMPRODUCT"):
                    core = self.core(side)
                    if core:
                        return f"{core} + bias"
        if isinstance(node, Binary) and node.op == "/" and _is_call(node.left, "MMULT") \
                and len(node.left.args) == 2 and _is_call(node.left.args[1], "TRANSPOSE") \
                and (_is_call(node.right, "SQRT") or isinstance(node.right, (Number, Ref))):
            return "attention scores QKᵀ/√d"
        if _is_call(node, "MMULT") and len(node.args) == 2:
            sa, sb = (self.shape(a) for a in node.args)
            return f"matmul {sa[0]}×{sa[1]} · {sb[0]}×{sb[1]}" if sa and sb else "matmul"
        if _is_call(node, "SUMPRODUCT") and len(node.args) == 2 and all(isinstance(a, Ref) for a in node.args):
            return self.linear(*node.args)
        over = self.softmax(node)
        if over:
            return f"softmax over {over}"
        if isinstance(node, Binary) and node.op == "^" and node.right == Number(2.0):
            return "squared error" if isinstance(node.left, Binary) and node.left.op == "-" else "square"
        if isinstance(node, Unary) and node.op == "-" and any(_is_call(n, "LN") for n in walk(node.arg)):
            return "cross-entropy"
        if _is_one_hot(node):
            return "one-hot"
        if _is_call(node, "MAX") and len(node.args) == 1 and isinstance(node.args[0], Ref):
            ref = node.args[0]
            h, w = self.shape(ref) or (1, 1)
            if h > 1 and w > 1 and not _fixed(ref):
                return f"max-pool {h}×{w}"      # a window that moves with the cell
        if _is_call(node, "AVERAGE"):
            return "mean"
        return None

    def fallback(self, node: Node) -> str:
        if isinstance(node, Call) and node.name == "SINGLE" and len(node.args) == 1 and isinstance(node.args[0], Call):
            return self.fallback(node.args[0])      # an OFFSET read as one value is an OFFSET
        if isinstance(node, Call) and node.name in _PLAIN:
            return node.name.lower()
        if isinstance(node, Binary) and node.op in _BINARY:
            return _BINARY[node.op]
        if isinstance(node, Call):
            return node.name
        if isinstance(node, Ref):
            return "copy"
        return "expression"

    def linear(self, a: Ref, b: Ref) -> str:
        """SUMPRODUCT(inputs, weights): n inputs to as many outputs as the weights take
        distinct blocks over the family (1 when fixed: one unit per column of cells)."""
        if _fixed(b) or _fixed(a):        # the usual weights: one block for every cell
            w, units = (b if _fixed(b) else a), 1
        else:
            ka, kb = self.blocks(a), self.blocks(b)
            w, units = (b, kb) if kb <= ka else (a, ka)
        h, ww = self.shape(w) or (0, 0)
        text = f"linear {h * ww}→{units}"
        if self.model is not None:
            text += f" ({self.kind(a)} · {self.kind(b)})"
        return text

    def blocks(self, ref: Ref) -> int:
        """How many different blocks `ref` reads across the family's cells."""
        bounds = np.stack(np.broadcast_arrays(*ref.bounds(self.fam.rows, self.fam.cols)), axis=1)
        return len(np.unique(bounds, axis=0))

    def kind(self, ref: Ref) -> str:
        """const, param or hidden: what the compiled model reads through `ref`."""
        step = next((s for s in self.model.steps if s.family is self.fam), None)
        p = step.plans.get(ref) if step is not None else None
        if p is None:
            return "expr"
        if p.const is not None:
            return "const"
        return "param" if p.producer >= len(self.graph.families) else "hidden"

    def softmax(self, node: Node) -> int | None:
        """EXP(x)/SUM(EXP(range)), e/SUM(range of EXP cells), SUMPRODUCT for SUM: how many
        entries the denominator normalises over."""
        if not (isinstance(node, Binary) and node.op == "/" and _is_call(node.right, "SUM", "SUMPRODUCT")
                and len(node.right.args) == 1 and self.is_exp(node.left)):
            return None
        arg = node.right.args[0]
        if not self.is_exp(arg):
            return None
        ref = next((n for n in walk(arg) if isinstance(n, Ref)), None)
        shape = self.shape(ref) if ref is not None else None
        return shape[0] * shape[1] if shape else None

    def is_exp(self, node: Node) -> bool:
        """EXP(...), or a reference to cells computed by EXP."""
        if _is_call(node, "EXP"):
            return True
        if isinstance(node, Ref):
            area = node.area_at(*self.at)
            fam = self.graph.family_at(area.sheet, area.r1, area.c1)
            return fam is not None and _is_call(fam.ast, "EXP")
        return False

    def shape(self, node: Node) -> tuple[int, int] | None:
        """Rows × columns of what `node` gives, where that is plain from its references."""
        if isinstance(node, Ref):
            return node.area_at(*self.at).shape
        if _is_call(node, "TRANSPOSE") and len(node.args) == 1:
            s = self.shape(node.args[0])
            return (s[1], s[0]) if s else None
        if _is_call(node, "MMULT") and len(node.args) == 2:
            sa, sb = (self.shape(a) for a in node.args)
            return (sa[0], sb[1]) if sa and sb else None
        return None


def _fixed(ref: Ref) -> bool:
    return ref.r1_abs and ref.c1_abs and ref.r2_abs and ref.c2_abs


def _is_call(node: Node, *names: str) -> bool:
    return isinstance(node, Call) and node.name in names


def _activation(node: Node) -> str:
    return "ReLU" if is_relu(node) else "sigmoid" if _sigmoid_input(node) is not None else "tanh"


def _activation_input(node: Node) -> Node | None:
    """x of ReLU(x), sigmoid(x) = 1/(1+EXP(-x)) or TANH(x); None for anything else."""
    if is_relu(node):
        if isinstance(node, Call) and node.name == "MAX":
            return next(a for a in node.args if a != Number(0.0))
        return node.args[1] if node.args[1] != Number(0.0) else node.args[2]      # IF(x<0,0,x)
    if _is_call(node, "TANH") and len(node.args) == 1:
        return node.args[0]
    return _sigmoid_input(node)


def _sigmoid_input(node: Node) -> Node | None:
    if not (isinstance(node, Binary) and node.op == "/" and node.left == Number(1.0)
            and isinstance(node.right, Binary) and node.right.op == "+"):
        return None
    one, e = node.right.left, node.right.right
    if e == Number(1.0):
        one, e = e, one
    if one == Number(1.0) and _is_call(e, "EXP") and len(e.args) == 1 and isinstance(e.args[0], Unary) \
            and e.args[0].op == "-":
        return e.args[0].arg
    return None


def _is_one_hot(node: Node) -> bool:
    """IF(x=literal,1,0): one column of a one-hot encoding."""
    if not (_is_call(node, "IF") and len(node.args) == 3):
        return False
    c, a, b = node.args
    return isinstance(c, Binary) and c.op == "=" and isinstance(c.right, (Number, Text)) \
        and a == Number(1.0) and b == Number(0.0)


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


__all__ = ["layer_name"]
