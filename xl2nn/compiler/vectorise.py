"""Sibling families as one wider op: the rewrite that turns a sheet's hidden units back into a layer.

A sheet spells a 2-unit hidden layer as two columns: two SUMPRODUCTs over the same inputs,
two IF-ReLUs, a sum. Traced, that is two (712x10)·(10x1) products and two ReLUs of 712
numbers. Here they become one (712x10)·(10x2) product, one ReLU over 712x2 and one row
sum — the ops a person writing the network in PyTorch would use. Every rewrite is checked
by index arithmetic (which entries each piece reads), never assumed from names.
"""
from __future__ import annotations

import operator
from collections import defaultdict

import torch
from torch import fx

from .fxutil import cells_of, meta_value, new_node

aten = torch.ops.aten

# Ops that only re-index their first argument, and the elementwise functions of one tensor.
INDEXING = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.slice.Tensor,
            aten.select.int, aten.t.default, aten.transpose.int, aten.permute.default,
            aten.expand.default, aten.alias.default}
UNARY = {aten.relu.default, aten.tanh.default, aten.exp.default, aten.sigmoid.default,
         aten.neg.default, aten.abs.default, aten.log.default, aten.sqrt.default}


def fuse_matmuls(gm: fx.GraphModule) -> bool:
    """mm(C, B1), mm(C, B2), ... -> one mm(C, cat([B1, B2, ...], 1)) read by column slices."""
    groups: dict[object, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.mm.default:
            c = node.args[0]
            groups[("attr", c.target) if c.op == "get_attr" else c].append(node)
    changed = False
    output = next(n for n in gm.graph.nodes if n.op == "output")
    for group in groups.values():
        if len(group) < 2:
            continue
        # Units in the order their weights lie (the sheet may compute unit 2 first), so that a
        # cat of consecutive weight slices stays a plain view (cat_of_slices).
        group = sorted(group, key=_slice_start)
        bs = [n.args[1] for n in group]
        widths = [meta_value(b).shape[1] for b in bs]
        out = meta_value(group[0])
        with gm.graph.inserting_before(output):
            cat = new_node(gm, aten.cat.default, (bs, 1), (meta_value(bs[0]).shape[0], sum(widths)), out, group)
            wide = new_node(gm, aten.mm.default, (group[0].args[0], cat), (out.shape[0], sum(widths)), out, group)
            start = 0
            for node, w in zip(group, widths):
                piece = new_node(gm, aten.slice.Tensor, (wide, 1, start, start + w), meta_value(node).shape, out, node)
                node.replace_all_uses_with(piece)
                start += w
        changed = True
    return changed


def _slice_start(mm: fx.Node) -> int:
    """Where mm's right operand starts in its source, when it is a view of a 1-D slice."""
    b = mm.args[1]
    if isinstance(b, fx.Node) and b.target == aten.view.default:
        s = b.args[0]
        if isinstance(s, fx.Node) and s.target == aten.slice.Tensor and len(s.args) == 4 and isinstance(s.args[2], int):
            return s.args[2]
    return -1


def _index_tree(root: fx.Node) -> dict[fx.Node, torch.Tensor]:
    """Nodes reachable from `root` through indexing ops alone, each with the flat indices
    of root's entries it holds (found by running the same ops on an arange)."""
    out = {root: torch.arange(meta_value(root).numel()).view(meta_value(root).shape)}
    todo = [root]
    while todo:
        node = todo.pop()
        for user in node.users:
            if user.op == "call_function" and user.target in INDEXING and user.args[0] is node:
                args = (out[node],) + tuple(user.args[1:])
                if user.target in (aten.view.default, aten._unsafe_view.default):
                    out[user] = out[node].reshape(*args[1:])    # a transposed view's indices copy
                else:
                    out[user] = user.target(*args, **user.kwargs)
                todo.append(user)
    return out


def _copy_path(gm: fx.GraphModule, root: fx.Node, leaf: fx.Node, new_root: fx.Node) -> fx.Node:
    """The chain of indexing ops from root to leaf, applied to new_root instead."""
    chain = []
    node = leaf
    while node is not root:
        chain.append(node)
        node = node.args[0]
    env = {root: new_root}
    for node in reversed(chain):
        env[node] = gm.graph.node_copy(node, lambda n: env.get(n, n))
    return env[leaf]


def _leaves(tree: dict[fx.Node, torch.Tensor]) -> list[fx.Node]:
    return [n for n in tree if not any(u in tree for u in n.users)]


def _partition(indices: list[torch.Tensor], total: int) -> bool:
    flat = torch.cat([i.reshape(-1) for i in indices])
    return flat.numel() == total and bool((torch.sort(flat).values == torch.arange(total)).all())


def sink_unary(gm: fx.GraphModule) -> bool:
    """f(piece_1(Y)), f(piece_2(Y)), ... covering Y exactly -> piece_k(f(Y)): one op, not k."""
    changed = False
    output = next(n for n in gm.graph.nodes if n.op == "output")
    for root in list(gm.graph.nodes):
        if root.op not in ("call_function", "get_attr", "placeholder") or root.target in INDEXING:
            continue
        if not isinstance(meta_value(root), torch.Tensor) or not root.users:
            continue            # (an op returning several tensors, e.g. sort, is no root)
        tree = _index_tree(root)
        leaves = _leaves(tree)
        if len(leaves) < 2 or any(len(leaf.users) != 1 for leaf in leaves):
            continue
        ops = {next(iter(leaf.users)).target for leaf in leaves}
        if len(ops) != 1 or not ops <= UNARY:
            continue
        if not _partition([tree[leaf] for leaf in leaves], meta_value(root).numel()):
            continue
        (op,) = ops
        with gm.graph.inserting_before(output):
            whole = new_node(gm, op, (root,), meta_value(root).shape, meta_value(root),
                             [next(iter(leaf.users)) for leaf in leaves])
            for leaf in leaves:
                user = next(iter(leaf.users))
                user.replace_all_uses_with(_copy_path(gm, root, leaf, whole))
        changed = True
    return changed


def sum_pieces(gm: fx.GraphModule) -> bool:
    """piece_1(R) + piece_2(R), the two halves of R's last axis -> R summed over that axis."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten.add.Tensor or node.kwargs:
            continue
        a, b = node.args
        if not isinstance(a, fx.Node) or not isinstance(b, fx.Node):
            continue
        root = _root(a)
        if root is None or root is not _root(b) or meta_value(a).shape != meta_value(node).shape:
            continue
        tree = _index_tree(root)
        if a not in tree or b not in tree or meta_value(b).shape != meta_value(a).shape:
            continue
        ia, ib = tree[a], tree[b]
        if not _partition([ia, ib], meta_value(root).numel()):
            continue
        lo = torch.minimum(ia, ib)
        if not (bool(((ia - ib).abs() == 1).all()) and bool((lo % 2 == 0).all())):
            continue
        # Entry j of the result is R[2k] + R[2k+1] for k = lo[j] / 2, in lo's order.
        if not bool((lo.reshape(-1) == torch.arange(0, lo.numel() * 2, 2)).all()):
            continue
        with gm.graph.inserting_before(node):
            half = meta_value(root).numel() // 2
            pairs = new_node(gm, aten.view.default, (root, [half, 2]), (half, 2), meta_value(root), node)
            total = new_node(gm, aten.sum.dim_IntList, (pairs, [1]), (half,), meta_value(root), node)
            new = new_node(gm, aten.view.default, (total, list(meta_value(node).shape)), meta_value(node).shape,
                           meta_value(node), node)
        node.replace_all_uses_with(new)
        changed = True
    return changed


def _root(node: fx.Node) -> fx.Node | None:
    while node.op == "call_function" and node.target in INDEXING:
        node = node.args[0]
    return node if node.op in ("call_function", "get_attr", "placeholder") else None


def cat_of_slices(gm: fx.GraphModule, node: fx.Node) -> object:
    """cat of k consecutive n-long slices of one vector, each as a column -> a transposed view."""
    if node.target != aten.cat.default or len(node.args) != 2 or node.args[1] != 1:
        return None
    parts = node.args[0]
    starts, source, n = [], None, None
    for p in parts:
        if not (isinstance(p, fx.Node) and p.target == aten.view.default):
            return None
        s = p.args[0]
        if not (isinstance(s, fx.Node) and s.target == aten.slice.Tensor and len(s.args) == 4
                and s.args[1] == 0 and meta_value(s).dim() == 1):
            return None
        if list(p.args[1]) not in ([meta_value(s).shape[0], 1], [-1, 1]):
            return None
        if source is not None and (s.args[0] is not source or meta_value(s).shape[0] != n):
            return None
        source, n = s.args[0], meta_value(s).shape[0]
        starts.append(s.args[2])
    if starts != list(range(starts[0], starts[0] + n * len(starts), n)):
        return None
    k = len(starts)
    like = meta_value(source)
    with gm.graph.inserting_before(node):
        sl = new_node(gm, aten.slice.Tensor, (source, 0, starts[0], starts[0] + n * k), (n * k,), like, parts)
        rows = new_node(gm, aten.view.default, (sl, [k, n]), (k, n), like, parts)
        new = new_node(gm, aten.t.default, (rows,), (n, k), like, parts)
    new.meta.update(node.meta)
    return new


def split_slices(gm: fx.GraphModule) -> bool:
    """x[:, :1] and x[:, 1:] (a bias column and the factors of one Solver range) -> one split:
    one backward op that joins the pieces' gradients, not one zero-filled copy per slice."""
    changed = False
    for node in list(gm.graph.nodes):
        v = meta_value(node)
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            continue
        by_dim: dict[int, list[fx.Node]] = defaultdict(list)
        for u in node.users:
            if u.op == "call_function" and u.target == aten.slice.Tensor and u.args[0] is node \
                    and len(u.args) >= 4 and u.args[4:5] in ((), (1,)) and not u.kwargs:
                by_dim[u.args[1] % v.dim()].append(u)
        for dim, slices in by_dim.items():
            size = v.shape[dim]
            spans = sorted({(max(0, s.args[2]), min(size, s.args[3])) for s in slices})
            if len(spans) < 2 or spans[0][0] != 0 or spans[-1][1] != size \
                    or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
                continue
            sizes = [b - a for a, b in spans]
            with gm.graph.inserting_after(node):
                split = gm.graph.call_function(aten.split_with_sizes.default, (node, sizes, dim))
            split.meta["val"] = [torch.empty(tuple(v.shape[:dim]) + (n,) + tuple(v.shape[dim + 1:]),
                                             dtype=v.dtype, device="meta") for n in sizes]
            split.meta["custom"] = {"cells": cells_of(slices)} if cells_of(slices) else {}
            for s in slices:
                k = spans.index((max(0, s.args[2]), min(size, s.args[3])))
                with gm.graph.inserting_after(split):
                    piece = gm.graph.call_function(operator.getitem, (split, k))
                piece.meta.update(s.meta)
                s.replace_all_uses_with(piece)
            changed = True
    return changed


def topo_sort(gm: fx.GraphModule) -> None:
    """Rewrites insert nodes at the end; put every node after what it reads, keeping the
    original order wherever it already works."""
    graph = gm.graph
    done: set[fx.Node] = set()
    order: list[fx.Node] = []

    def visit(node: fx.Node) -> None:
        stack = [(node, False)]
        while stack:
            n, ready = stack.pop()
            if n in done:
                continue
            if ready:
                done.add(n)
                order.append(n)
                continue
            stack.append((n, True))
            for dep in reversed(n.all_input_nodes):
                if dep not in done:
                    stack.append((dep, False))

    for node in list(graph.nodes):
        visit(node)
    prev = None
    for node in order:
        if prev is not None and node.prev is not prev:
            prev.append(node)
        prev = node


__all__ = ["split_slices", "INDEXING", "fuse_matmuls", "sink_unary", "sum_pieces", "cat_of_slices", "topo_sort"]
