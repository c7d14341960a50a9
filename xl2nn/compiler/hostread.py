"""While the model is traced, no parameter-dependent number may leave torch.

make_fx records torch ops. A value read back into Python or NumPy (`.numpy()`, `.tolist()`,
`.item()`, `bool(t)`) is not an op: the trace would keep the number it had at the weights
traced, a constant, and train another function. `HostReadGuard` turns every such read of a
tensor that depends on a traced input into `HostRead`, so a family either traces to ops that
recompute it for any weights or is not traced at all. Reads of constants stay allowed: the
function library inspects constant ranges (lookup tables, criteria) on the host all the time.
"""
from __future__ import annotations

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing, get_proxy_mode, get_proxy_slot
from torch.overrides import TorchFunctionMode

from ..functions.tracing import HostRead

_READS = {torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.__array__, torch.Tensor.item,
          torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
          torch.equal, torch.allclose}
# Ops whose result's shape depends on the numbers: the trace would keep the shape it saw.
_SHAPED = {torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.unique,
           torch.Tensor.unique, torch.unique_consecutive, torch.Tensor.unique_consecutive,
           torch.masked_select, torch.Tensor.masked_select, torch.repeat_interleave,
           torch.Tensor.repeat_interleave}
# x[mask] too; x[mask] = v keeps x's shape (and a v made by x[mask] would have raised).
_INDEXING = {torch.Tensor.__getitem__}


class HostReadGuard(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _SHAPED or func in _INDEXING:
            mode = get_proxy_mode()
            if mode is not None:
                looked_at = args if func in _SHAPED else args[1:]      # x[mask]: the mask, not x
                tensors = [a for a in _flat(looked_at) if isinstance(a, torch.Tensor)
                           and (func in _SHAPED or a.dtype == torch.bool)]
                if any(_depends_on_input(t, mode.tracer) for t in tensors):
                    raise HostRead(getattr(func, "__name__", str(func)))
        if func in _READS:
            mode = get_proxy_mode()
            if mode is not None:
                if any(_depends_on_input(a, mode.tracer) for a in args if isinstance(a, torch.Tensor)):
                    raise HostRead(getattr(func, "__name__", str(func)))
                # A constant made inside the trace: its number is the same for any weights,
                # so read it outside the tracer (make_fx would refuse any .item()).
                with disable_proxy_modes_tracing():
                    return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _flat(args: object) -> list[object]:
    """Arguments with tuples and lists opened (an index like x[mask, 0])."""
    out: list[object] = []
    for a in args if isinstance(args, (tuple, list)) else (args,):
        out.extend(_flat(a) if isinstance(a, (tuple, list)) else [a])
    return out


def _depends_on_input(t: torch.Tensor, tracer: object) -> bool:
    slot = get_proxy_slot(t, tracer, None)
    if slot is None:
        return False
    return reads_input(slot.proxy.node)


def reads_input(node: fx.Node) -> bool:
    """Whether `node`'s value depends on a placeholder, counting in-place writes into it or
    into any view of it (z = zeros(); z[0] = w; z.numpy() reads w)."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder":
            return True
        stack.extend(n.all_input_nodes)
        for user in n.users:          # only ops recorded so far: writes before this read
            if _writes_or_views(user):
                stack.append(user)
    return False


def _writes_or_views(node: fx.Node) -> bool:
    target = node.target
    schema = getattr(target, "_schema", None)
    if schema is None:
        return False
    return bool(schema.is_mutable) or bool(getattr(target, "is_view", False))
