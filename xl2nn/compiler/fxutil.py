"""Small helpers every graph rewrite uses: a node's recorded value, new nodes that keep the
cells they compute (generated code names them), and constants held as module attributes."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import fx

# The reshapes make_fx records (rewrites see through them).
VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.reshape.default}


def meta_value(node: object) -> torch.Tensor | None:
    """The value make_fx recorded for a node (a fake or meta tensor: shape and dtype)."""
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def new_node(gm: fx.GraphModule, target, args: tuple, shape, like: torch.Tensor,
             origin: fx.Node | Sequence[fx.Node] = ()) -> fx.Node:
    """A new node; its recorded value is a meta tensor (shape and dtype are all rewrites read).
    It keeps the cells of the node(s) it replaces, so generated code can still name them."""
    node = gm.graph.call_function(target, args)
    node.meta["val"] = torch.empty(tuple(shape), dtype=like.dtype, device="meta")
    cells = cells_of([origin] if isinstance(origin, fx.Node) else origin)
    if cells:
        node.meta["custom"] = {"cells": cells}
    return node


def cells_of(nodes: Sequence[fx.Node]) -> str:
    """The cells (families) the nodes were traced from, each once, in order."""
    seen: dict[str, None] = {}
    for n in nodes:
        for part in n.meta.get("custom", {}).get("cells", "").split("; "):
            if part:
                seen[part] = None
    return "; ".join(seen)


def constant(gm: fx.GraphModule, node: object) -> torch.Tensor | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        t = getattr(gm, node.target)
        return t if isinstance(t, torch.Tensor) else None
    return None


def new_constant(gm: fx.GraphModule, before: fx.Node, value: torch.Tensor) -> fx.Node:
    """A get_attr node for `value`, reusing an equal constant when there is one (the same
    input block is often read from two sheets)."""
    for name, t in gm.named_buffers():
        if t.shape == value.shape and t.dtype == value.dtype and torch.equal(t, value):
            target = name
            break
    else:
        target = f"_const{len(list(gm.named_buffers()))}"
        while hasattr(gm, target):
            target += "_"
        gm.register_buffer(target, value)
    with gm.graph.inserting_before(before):
        node = gm.graph.get_attr(target)
        node.meta["val"] = torch.empty(tuple(value.shape), dtype=value.dtype, device="meta")
        return node


__all__ = ["VIEWS", "meta_value", "new_node", "cells_of", "constant", "new_constant"]
