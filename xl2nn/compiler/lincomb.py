"""Weights times input columns, summed, as one matrix product.

`=$H$4*x1+$I$4*x2+$J$4` copied down a column traces as one product and one sum per weight: each
weight a one-number slice of the parameter row, each input a constant column. Neighbouring
weights times constants of one shape are `X @ w` for the constants side by side and the run of
weights: the layer nn.Linear computes. Found on the slices' positions, whatever the sheet's
layout; a run grows one weight at a time, in either order of the sum.
"""
from __future__ import annotations

import torch
from torch import fx

from .fxutil import VIEWS as _VIEWS
from .fxutil import constant, new_constant, new_node
from .fxutil import meta_value as _val

aten = torch.ops.aten


def _weight(node: object) -> tuple[fx.Node, int] | None:
    """(flat parameter, position) when node is one entry of a flat parameter, viewed."""
    while isinstance(node, fx.Node) and node.target in _VIEWS and _val(node).numel() == 1:
        node = node.args[0]
    if isinstance(node, fx.Node) and node.target == aten.slice.Tensor and len(node.args) >= 4 \
            and node.args[1] == 0 and _val(node.args[0]).dim() == 1 and _val(node).numel() == 1 \
            and node.args[4:5] in ((), (1,)):
        return node.args[0], int(node.args[2])
    return None


def _term(gm: fx.GraphModule, node: object) -> tuple[fx.Node, int, int, torch.Tensor | None] | None:
    """(flat parameter, first, end, constant columns (n, end - first)) for w[k]·C or for
    X @ w[first:end] made here before; for a lone weight w[k] (a bias: w[k]·1), no columns."""
    if not isinstance(node, fx.Node) or len(node.users) != 1:
        return None
    w = _weight(node)
    if w is not None:
        return w[0], w[1], w[1] + 1, None
    if node.target == aten.mul.Tensor and len(node.args) == 2:
        for k in (0, 1):
            w, c = _weight(node.args[k]), constant(gm, node.args[1 - k])
            if w is not None and c is not None and tuple(c.shape) == tuple(_val(node).shape):
                return w[0], w[1], w[1] + 1, c.reshape(-1, 1)
    mm = node.args[0] if node.target in _VIEWS else node      # (a view to (n, 1) folds away)
    if not (isinstance(mm, fx.Node) and mm.target == aten.mm.default and len(mm.users) == 1):
        return None
    x, w = constant(gm, mm.args[0]), mm.args[1]
    if x is None or not (isinstance(w, fx.Node) and w.target in _VIEWS):
        return None
    s = w.args[0]
    if isinstance(s, fx.Node) and s.target == aten.slice.Tensor and s.args[1] == 0 \
            and s.args[4:5] in ((), (1,)) and _val(s.args[0]).dim() == 1:
        return s.args[0], int(s.args[2]), int(s.args[3]), x
    return None


def combine(gm: fx.GraphModule, node: fx.Node) -> object:
    """a·C1 + b·C2 (or + b alone: b·1) with a, b neighbouring weights -> (C1 C2) @ (a b)ᵀ,
    shaped as the sum."""
    if node.target != aten.add.Tensor or node.kwargs or len(node.args) != 2:
        return None
    ta, tb = _term(gm, node.args[0]), _term(gm, node.args[1])
    if ta is None or tb is None or ta[0] is not tb[0] or (ta[3] is None and tb[3] is None):
        return None
    for t, arg in ((ta, node.args[0]), (tb, node.args[1])):
        if tuple(_val(arg).shape) != tuple(_val(node).shape) if t[3] is not None else _val(arg).numel() != 1:
            return None
    if ta[2] == tb[1]:
        first, second = ta, tb
    elif tb[2] == ta[1]:
        first, second = tb, ta
    else:
        return None
    flat, start, end = first[0], first[1], second[2]
    like = _val(node)
    n = like.numel()
    ref = first[3] if first[3] is not None else second[3]
    columns = torch.cat([t[3] if t[3] is not None else torch.ones((n, 1), dtype=ref.dtype, device=ref.device)
                         for t in (first, second)], 1).contiguous()
    x = new_constant(gm, node, columns)
    with gm.graph.inserting_before(node):
        w = new_node(gm, aten.slice.Tensor, (flat, 0, start, end), (end - start,), like, node)
        col = new_node(gm, aten.view.default, (w, [end - start, 1]), (end - start, 1), like, node)
        prod = new_node(gm, aten.mm.default, (x, col), (columns.shape[0], 1), like, node)
        return new_node(gm, aten.view.default, (prod, list(like.shape)), like.shape, like, node)


def sum_of_products(gm: fx.GraphModule, node: fx.Node) -> object:
    """sum over the trailing axes of C * W, C a constant (n, ...) and W one block (1, ...) for
    all n (a window times a kernel, a row of inputs times a row of weights) -> C as (n, k) @ W
    as (k, 1): the im2col form of a convolution, one product."""
    if node.target != aten.sum.dim_IntList or len(node.args) < 2 or node.kwargs:
        return None
    prod, dims = node.args[0], sorted(d % _val(node.args[0]).dim() for d in node.args[1])
    keep = bool(node.args[2]) if len(node.args) > 2 else False
    if not (isinstance(prod, fx.Node) and prod.target == aten.mul.Tensor and len(prod.users) == 1
            and len(prod.args) == 2):
        return None
    shape = tuple(_val(prod).shape)
    if len(shape) < 2 or dims != list(range(1, len(shape))):
        return None
    for k in (0, 1):
        c, w = constant(gm, prod.args[k]), prod.args[1 - k]
        if c is None or tuple(c.shape) != shape or not isinstance(w, fx.Node) \
                or tuple(_val(w).shape) != (1, *shape[1:]) or _val(w).dtype != c.dtype:
            continue
        n, size = shape[0], _val(w).numel()
        like = _val(node)
        x = new_constant(gm, node, c.reshape(n, size).contiguous())
        with gm.graph.inserting_before(node):
            col = new_node(gm, aten.view.default, (w, [size, 1]), (size, 1), like, node)
            out = new_node(gm, aten.mm.default, (x, col), (n, 1), like, node)
            return new_node(gm, aten.view.default, (out, list(like.shape)), like.shape, like, node) \
                if tuple(like.shape) != (n, 1) or not keep else out
    return None


__all__ = ["combine", "sum_of_products"]
