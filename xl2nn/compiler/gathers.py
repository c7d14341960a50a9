"""Per-cell gathers back into the blocks they read: the rewrite that turns a grid of MMULTs
into one matrix product.

A copied formula reads its operands cell by cell: `MMULT($B25:$F25,H$19:H$23)` over a 15×15
block is traced as two gathers (each cell's row of one block, each cell's column of the
other) and a batch of 225 one-by-one products. When the rows gathered and the columns gathered
pair up into every (row, column) of a grid, that is `A @ B`; when a gather reads a rectangle of
a block in order, it is a slice of the block; when it repeats one row (a bias row added to
every row), it is that row, broadcast. All of it is checked on the index tensors themselves,
never assumed from the layout, so the same rewrite fires for any placement or orientation.
"""
from __future__ import annotations

import torch
from torch import fx

from .fxutil import VIEWS as _VIEWS
from .fxutil import constant, new_constant, new_node
from .fxutil import meta_value as _val

aten = torch.ops.aten
_BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}


def _gather(gm: fx.GraphModule, node: object) -> tuple[fx.Node, torch.Tensor] | None:
    """(source, constant index, on the CPU) when node is source[index] with one index tensor."""
    if isinstance(node, fx.Node) and node.target == aten.index.Tensor and len(node.args) == 2:
        idx = node.args[1]
        if isinstance(idx, (list, tuple)) and len(idx) == 1:
            i = constant(gm, idx[0])
            if i is not None and i.dtype in (torch.int64, torch.int32):
                return node.args[0], i.cpu().long()
    return None


def _index(gm: fx.GraphModule, before: fx.Node, src: fx.Node, idx: torch.Tensor, origin: fx.Node) -> fx.Node:
    """src[idx], the index a constant on the program's device."""
    device = next((t.device for t in gm.buffers()), torch.device("cpu"))
    c = new_constant(gm, before, idx.to(device).contiguous())
    with gm.graph.inserting_before(before):
        return new_node(gm, aten.index.Tensor, (src, [c]), tuple(idx.shape), _val(src), origin)


def grid_matmul(gm: fx.GraphModule, node: fx.Node) -> object:
    """bmm(A[I], B[J]), each entry a row of A's gathered rows times a column of B's, the pairs
    covering every (row, column) once -> (A[rows] @ B[cols]) in the entries' order."""
    if node.target != aten.bmm.default:
        return None
    ga, gb = _gather(gm, node.args[0]), _gather(gm, node.args[1])
    if ga is None or gb is None:
        return None
    (src_a, ia), (src_b, ib) = ga, gb
    n, m, k = ia.shape
    if m != 1 or ib.shape[0] != n or ib.shape[1] != k or ib.shape[2] != 1 or n < 2:
        return None
    rows, inv_a = torch.unique(ia.reshape(n, k), dim=0, return_inverse=True)
    cols, inv_b = torch.unique(ib.reshape(n, k), dim=0, return_inverse=True)
    r, c = rows.shape[0], cols.shape[0]
    order = inv_a * c + inv_b
    if r * c != n or not torch.equal(torch.sort(order).values, torch.arange(n)):
        return None
    like = _val(node)
    a = _index(gm, node, src_a, rows, node)                        # (r, k)
    b = _index(gm, node, src_b, cols.t(), node)                    # (k, c)
    with gm.graph.inserting_before(node):
        prod = new_node(gm, aten.mm.default, (a, b), (r, c), like, node)
        flat = new_node(gm, aten.view.default, (prod, [n]), (n,), like, node)
        if not torch.equal(order, torch.arange(n)):
            flat = _index(gm, node, flat, order, node)
        new = new_node(gm, aten.view.default, (flat, list(like.shape)), like.shape, like, node)
    new.meta.update(node.meta)
    return new


def gather_as_view(gm: fx.GraphModule, node: fx.Node) -> object:
    """src[I] where I walks a rectangle of src's 2-D block row by row (or column by column,
    or repeats one row) -> a slice of the block (transposed, or broadcast later by its reader)."""
    g = _gather(gm, node)
    if g is None:
        return None
    src, idx = g
    block = src.args[0] if isinstance(src, fx.Node) and src.target in _VIEWS and _val(src).dim() == 1 else None
    if block is None or _val(block) is None or _val(block).dim() != 2 or idx.dim() != 2:
        return None
    width = _val(block).shape[1]
    rows, cols = idx // width, idx % width
    n, m = idx.shape
    r0, c0 = int(rows.min()), int(cols.min())
    like = _val(node)
    if torch.equal(rows, r0 + torch.arange(n)[:, None].expand(n, m)) \
            and torch.equal(cols, c0 + torch.arange(m)[None, :].expand(n, m)):
        transpose = False
    elif torch.equal(rows, r0 + torch.arange(m)[None, :].expand(n, m)) \
            and torch.equal(cols, c0 + torch.arange(n)[:, None].expand(n, m)):
        transpose, n, m = True, m, n
    else:
        return None
    with gm.graph.inserting_before(node):
        out = block
        if (r0, n) != (0, _val(block).shape[0]):
            out = new_node(gm, aten.slice.Tensor, (out, 0, r0, r0 + n), (n, _val(out).shape[1]), like, node)
        if (c0, m) != (0, width):
            out = new_node(gm, aten.slice.Tensor, (out, 1, c0, c0 + m), (n, m), like, node)
        if transpose:
            out = new_node(gm, aten.t.default, (out,), (m, n), like, node)
    return out


def gather_past_view(gm: fx.GraphModule, node: fx.Node) -> object:
    """op(view(X, S), src[I]) with I shaped S -> view(op(X, src[I reshaped like X]), S); and
    where I repeats along an axis of X, only one copy of it, which op broadcasts."""
    if node.target not in _BINARY or node.kwargs or len(node.args) != 2:
        return None
    for k in (0, 1):
        view, other = node.args[k], node.args[1 - k]
        g = _gather(gm, other)
        if not (isinstance(view, fx.Node) and view.target in _VIEWS and len(view.users) == 1) or g is None:
            continue
        x = view.args[0]
        shape = tuple(_val(x).shape)
        src, idx = g
        if tuple(idx.shape) != tuple(_val(node).shape) or idx.numel() != _val(x).numel() \
                or tuple(_val(view).shape) != tuple(_val(node).shape):
            continue
        idx = _broadcast_part(idx.reshape(shape))
        gathered = _index(gm, node, src, idx, other)
        args = (x, gathered) if k == 0 else (gathered, x)
        with gm.graph.inserting_before(node):
            inner = new_node(gm, node.target, args, shape, _val(node), node)
            return new_node(gm, aten.view.default, (inner, list(_val(node).shape)), _val(node).shape, _val(node), node)
    return None


def _broadcast_part(idx: torch.Tensor) -> torch.Tensor:
    """idx with every axis along which it repeats kept at length 1."""
    for axis in range(idx.dim()):
        first = idx.narrow(axis, 0, 1)
        if idx.shape[axis] > 1 and torch.equal(idx, first.expand_as(idx)):
            idx = first
    return idx


def where_past_view(gm: fx.GraphModule, node: fx.Node) -> object:
    """where(C, c, view(X, S)) with constants C (shaped S) and c (one number), either order ->
    view(where(C reshaped like X, c, X), S)."""
    if node.target != aten.where.self:
        return None
    cond, a, b = node.args
    mask = constant(gm, cond)
    if mask is None or tuple(mask.shape) != tuple(_val(node).shape):
        return None
    for k, (view, other) in enumerate(((b, a), (a, b))):
        c = constant(gm, other)
        if c is None or c.numel() != 1 or not (isinstance(view, fx.Node) and view.target in _VIEWS):
            continue
        x = view.args[0]
        if _val(x).numel() != mask.numel() or tuple(_val(view).shape) != tuple(_val(node).shape):
            continue
        m = new_constant(gm, node, mask.reshape(_val(x).shape).contiguous())
        one = new_constant(gm, node, c.reshape(()).contiguous())     # (1,1,1) would broadcast x up
        with gm.graph.inserting_before(node):
            args = (m, one, x) if k == 0 else (m, x, one)
            inner = new_node(gm, aten.where.self, args, _val(x).shape, _val(node), node)
            return new_node(gm, aten.view.default, (inner, list(_val(node).shape)), _val(node).shape, _val(node), node)
    return None


__all__ = ["grid_matmul", "gather_as_view", "gather_past_view", "where_past_view"]
