"""Rewrites of a traced program (an fx graph of aten ops) into fewer, cheaper ops.

Each rule looks at one node and returns its replacement (or None); `optimise` runs them to
a fixed point together with the sibling fusions of `vectorise`, then maps what is left to
the public torch functions and turns constants into buffers.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import fx

from . import gathers, guards, lincomb, vectorise
from .fxutil import VIEWS as _VIEWS
from .fxutil import constant as _constant
from .fxutil import meta_value as _val
from .fxutil import new_constant as _new_constant
from .fxutil import new_node

aten = torch.ops.aten

# Ops that compute nothing (they re-index memory); not counted as tensor ops.
FREE = vectorise.INDEXING | {torch.t, torch.select}


def _is_zero(gm: fx.GraphModule, node: object) -> bool:
    t = _constant(gm, node)
    return t is not None and t.numel() == 1 and float(t.reshape(())) == 0.0


def _rewrite(gm: fx.GraphModule, rule: Callable[[fx.GraphModule, fx.Node], object]) -> bool:
    changed = False
    known = set(gm.graph.nodes)
    for node in list(known):
        if node.op != "call_function":
            continue
        new = rule(gm, node)
        if new is not None and new is not node:
            _inherit_cells(new, node, known)
            node.replace_all_uses_with(new)
            changed = True
    return changed


def _inherit_cells(new: object, old: fx.Node, known: set[fx.Node]) -> None:
    """Nodes a rule made take the cells of the node they replace (generated code names them)."""
    cells = old.meta.get("custom")
    todo = [new] if isinstance(new, fx.Node) else []
    while todo and cells:
        n = todo.pop()
        if n in known or n.op != "call_function":
            continue
        known.add(n)
        n.meta.setdefault("custom", dict(cells))
        todo.extend(n.all_input_nodes)


def _drop_lift(gm: fx.GraphModule, node: fx.Node) -> object:
    # Literal constants are copied on every call ("lifted"); nothing writes to them.
    if node.target in (aten.lift_fresh_copy.default, aten.lift_fresh.default):
        return node.args[0]
    return None


def _fold_views(gm: fx.GraphModule, node: fx.Node) -> object:
    if node.target == aten.slice.Tensor and node.args[4:5] in ((), (1,)):
        if _val(node).shape == _val(node.args[0]).shape:
            return node.args[0]                           # a slice that keeps everything
    if node.target not in _VIEWS and node.target != aten.expand.default:
        return None
    src = node.args[0]
    out, inp = _val(node), _val(src)
    if out is not None and inp is not None and tuple(out.shape) == tuple(inp.shape):
        return src                                        # a view (or expand) to the same shape
    if node.target == aten.expand.default:
        return None
    if isinstance(src, fx.Node) and src.target in _VIEWS:
        with gm.graph.inserting_before(node):             # view(view(x)) = view(x)
            new = gm.graph.call_function(aten.view.default, (src.args[0], list(out.shape)))
            new.meta.update(node.meta)
            return new
    return None


def _fold_constants(gm: fx.GraphModule, node: fx.Node) -> object:
    # An op on constants alone (a view or expand of an input block, ...) runs once, here,
    # unless its result is much bigger than what it reads.
    if _val(node) is None or not isinstance(_val(node), torch.Tensor):
        return None
    inputs = [a for a in node.all_input_nodes]
    consts = [_constant(gm, a) for a in inputs]
    if not inputs or any(c is None for c in consts):
        return None
    if _val(node).numel() > 2 * sum(c.numel() for c in consts) + 16:
        return None
    env = dict(zip(inputs, consts))
    args = fx.node.map_arg(node.args, lambda a: env[a])
    kwargs = fx.node.map_arg(node.kwargs, lambda a: env[a])
    with torch.no_grad():
        value = node.target(*args, **kwargs)
    if not isinstance(value, torch.Tensor):
        return None
    return _new_constant(gm, node, value.contiguous())


def _bmm_of_one(gm: fx.GraphModule, node: fx.Node) -> object:
    # MMULT evaluates as a batch of one matrix product; mm needs no expand (whose backward sums).
    if node.target != aten.bmm.default or _val(node).shape[0] != 1:
        return None
    a, b = node.args
    with gm.graph.inserting_before(node):
        ops = []
        for x in (a, b):
            v = gm.graph.call_function(aten.view.default, (x, list(_val(x).shape[1:])))
            v.meta["val"] = _val(x)[0]
            ops.append(v)
        prod = gm.graph.call_function(aten.mm.default, tuple(ops))
        prod.meta["val"] = _val(node)[0]
        new = gm.graph.call_function(aten.view.default, (prod, list(_val(node).shape)))
        new.meta.update(node.meta)
        return new


def _bool_round_trip(gm: fx.GraphModule, node: fx.Node) -> object:
    # IF's condition: a comparison made float (a cell holds TRUE as 1) then tested != 0.
    if node.target == aten.ne.Scalar and node.args[1] == 0:
        src = node.args[0]
        if isinstance(src, fx.Node) and src.target == aten._to_copy.default:
            b = src.args[0]
            if _val(b) is not None and _val(b).dtype == torch.bool and set(src.kwargs) <= {"dtype"}:
                if tuple(_val(b).shape) == tuple(_val(node).shape):
                    return b
    return None


def _relu(gm: fx.GraphModule, node: fx.Node) -> object:
    # IF(x<0,0,x) and IF(x>0,x,0) are ReLU, with ReLU's gradient (0 at x = 0, as Excel's IF gives).
    if node.target != aten.where.self:
        return None
    cond, a, b = node.args
    if not isinstance(cond, fx.Node) or len(cond.args) != 2:
        return None
    x, zero = cond.args
    if not _is_zero(gm, zero):
        return None
    if cond.target in (aten.lt.Tensor, aten.le.Tensor) and _is_zero(gm, a) and b is x:
        pass
    elif cond.target in (aten.gt.Tensor, aten.ge.Tensor) and a is x and _is_zero(gm, b):
        pass
    else:
        return None
    if tuple(_val(x).shape) != tuple(_val(node).shape) or _val(x).dtype != _val(node).dtype:
        return None
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(aten.relu.default, (x,))
        new.meta.update(node.meta)
        return new


def _scalar_divisor(gm: fx.GraphModule, node: fx.Node) -> object:
    # AVERAGE divides by a count made with full(); a Python number does the same with no tensor.
    if node.target != aten.div.Tensor:
        return None
    num, den = node.args
    if isinstance(den, fx.Node) and den.target == aten.full.default and len(den.args) == 2:
        value = float(den.args[1])
    elif _constant(gm, den) is not None and _constant(gm, den).numel() == 1:
        value = float(_constant(gm, den).reshape(()))       # COUNT of a range of constants
    else:
        return None
    if tuple(_val(num).shape) == tuple(_val(node).shape):
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(aten.div.Scalar, (num, value))
            new.meta.update(node.meta)
            return new
    return None


def _full_sum(gm: fx.GraphModule, node: fx.Node) -> object:
    # A sum down to one number needs no keepdim layout: sum everything, then shape it.
    if node.target != aten.sum.dim_IntList or _val(node).numel() != 1 or node.kwargs:
        return None
    src = node.args[0]
    while isinstance(src, fx.Node) and src.target in _VIEWS:
        src = src.args[0]
    with gm.graph.inserting_before(node):
        total = gm.graph.call_function(aten.sum.default, (src,))
        total.meta["val"] = _val(node).reshape(())
        new = gm.graph.call_function(aten.view.default, (total, list(_val(node).shape)))
        new.meta.update(node.meta)
        return new


def _select_only(gm: fx.GraphModule, node: fx.Node) -> object:
    # Selecting along a dimension of size 1 (the one entry of a one-entry vector, or the
    # only block of a (1, h, w) array) is a reshape.
    if node.target == aten.select.int and _val(node.args[0]).shape[node.args[1]] == 1:
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(aten.view.default, (node.args[0], list(_val(node).shape)))
            new.meta.update(node.meta)
            return new
    return None


def _scalar_through(gm: fx.GraphModule, node: fx.Node) -> object:
    # view(div(view(x), c)) on one number: divide x itself, so the views fold away.
    if node.target in (aten.div.Scalar, aten.mul.Scalar) and _val(node).numel() == 1:
        src = node.args[0]
        if isinstance(src, fx.Node) and src.target in _VIEWS:
            with gm.graph.inserting_before(node):
                inner = gm.graph.call_function(node.target, (src.args[0], node.args[1]))
                inner.meta["val"] = _val(src.args[0])
                new = gm.graph.call_function(aten.view.default, (inner, list(_val(node).shape)))
                new.meta.update(node.meta)
                return new
    return None


def _square(gm: fx.GraphModule, node: fx.Node) -> object:
    # x*x (how x^2 is evaluated) has a backward of two products and a sum; pow's has one.
    if node.target == aten.mul.Tensor and node.args[0] is node.args[1] and not node.kwargs:
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(aten.pow.Tensor_Scalar, (node.args[0], 2))
            new.meta.update(node.meta)
            return new
    return None


def _mean(gm: fx.GraphModule, node: fx.Node) -> object:
    # AVERAGE over a whole block: sum / count is mean, one op instead of two.
    if node.target == aten.div.Scalar:
        src = node.args[0]
        if isinstance(src, fx.Node) and src.target == aten.sum.default and len(src.args) == 1 \
                and float(node.args[1]) == _val(src.args[0]).numel() and len(src.users) == 1:
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(aten.mean.default, (src.args[0],))
                new.meta.update(node.meta)
                return new
    return None


def _mse(gm: fx.GraphModule, node: fx.Node) -> object:
    # AVERAGE or SUM of (a-b)^2 (a squared-error column, SUMXMY2) is mse_loss: one op whose
    # backward is one kernel, as a person writes it.
    if node.target not in (aten.mean.default, aten.sum.default) or len(node.args) != 1 or node.kwargs:
        return None
    sq = node.args[0]
    if not (isinstance(sq, fx.Node) and sq.target == aten.pow.Tensor_Scalar and sq.args[1] == 2
            and len(sq.users) == 1):
        return None
    d = sq.args[0]
    if not (isinstance(d, fx.Node) and d.target == aten.sub.Tensor and len(d.users) == 1 and not d.kwargs
            and len(d.args) == 2 and all(isinstance(x, fx.Node) and tuple(_val(x).shape) == tuple(_val(d).shape)
                                         and _val(x).dtype == _val(d).dtype for x in d.args)):
        return None
    with gm.graph.inserting_before(node):
        reduction = 1 if node.target == aten.mean.default else 2
        new = gm.graph.call_function(aten.mse_loss.default, (d.args[0], d.args[1], reduction))
        new.meta.update(node.meta)
        return new


# Reshapes are carried past elementwise ops toward the reduction that ends the program, where
# they vanish: (712,) viewed as (712,1,1) to meet a (712,1,1) target column costs a view and
# its backward on every step; the target reshaped once, here, costs nothing.
_ELEMENTWISE_BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}
_ELEMENTWISE_UNARY = {aten.pow.Tensor_Scalar, aten.relu.default, aten.tanh.default, aten.exp.default,
                      aten.neg.default, aten.abs.default, aten.sqrt.default, aten.log.default, aten.sigmoid.default}


def _only_view(node: object) -> bool:
    return isinstance(node, fx.Node) and node.target in _VIEWS and len(node.users) == 1


def _view_past_binary(gm: fx.GraphModule, node: fx.Node) -> object:
    """op(view(x, S), c) with a constant c of shape S -> view(op(x, c reshaped like x), S)."""
    if node.target not in _ELEMENTWISE_BINARY or node.kwargs or len(node.args) != 2:
        return None
    for k in (0, 1):
        view, other = node.args[k], node.args[1 - k]
        c = _constant(gm, other)
        if not _only_view(view) or c is None or tuple(c.shape) != tuple(_val(node).shape):
            continue
        x = view.args[0]
        if _val(x).numel() != c.numel():
            continue
        with gm.graph.inserting_before(node):
            const = _new_constant(gm, node, c.reshape(_val(x).shape).contiguous())
            const.meta["val"] = _val(x)
            args = (x, const) if k == 0 else (const, x)
            inner = new_node(gm, node.target, args, _val(x).shape, _val(node), node)
            new = new_node(gm, aten.view.default, (inner, list(_val(node).shape)), _val(node).shape, _val(node),
                           node)
        return new
    return None


def _view_past_unary(gm: fx.GraphModule, node: fx.Node) -> object:
    """f(view(x, S)) -> view(f(x), S) for elementwise f."""
    if node.target not in _ELEMENTWISE_UNARY or node.kwargs or not _only_view(node.args[0]):
        return None
    x = node.args[0].args[0]
    with gm.graph.inserting_before(node):
        inner = new_node(gm, node.target, (x,) + tuple(node.args[1:]), _val(x).shape, _val(node), node)
        return new_node(gm, aten.view.default, (inner, list(_val(node).shape)), _val(node).shape, _val(node),
                        node)


def _reduce_through_view(gm: fx.GraphModule, node: fx.Node) -> object:
    """sum or mean of all entries does not care about the shape they are viewed in."""
    if node.target in (aten.sum.default, aten.mean.default) and len(node.args) == 1 and not node.kwargs:
        src = node.args[0]
        if isinstance(src, fx.Node) and src.target in _VIEWS:
            with gm.graph.inserting_before(node):
                return new_node(gm, node.target, (src.args[0],), (), _val(node), node)
    return None


_RULES = (_drop_lift, guards.factory, _fold_views, _fold_constants, guards.bounded, guards.trivial, guards.isfinite, guards.reselect,
          gathers.grid_matmul, gathers.gather_as_view, gathers.gather_past_view, gathers.where_past_view,
          _bmm_of_one, _bool_round_trip, _relu, _scalar_divisor, _full_sum, _select_only, _scalar_through, _square,
          _mean, _mse, lincomb.combine, lincomb.sum_of_products, _view_past_binary, _view_past_unary, _reduce_through_view, vectorise.cat_of_slices)


def optimise(gm: fx.GraphModule, objective: bool = True) -> fx.GraphModule:
    """Rewrite to a fixed point, then vectorise siblings; returns gm, recompiled. `objective`:
    the output is an objective, where any non-finite number is an error (see guards.py)."""
    for _ in range(20):
        changed = False
        for rule in _RULES:
            changed |= _rewrite(gm, rule)
        changed |= guards.common_subexpressions(gm)
        changed |= guards.drop_guards(gm, objective)
        gm.graph.eliminate_dead_code()
        for fuse in (vectorise.fuse_matmuls, vectorise.sink_unary, vectorise.sum_pieces):
            if fuse(gm):
                changed = True
                vectorise.topo_sort(gm)
                gm.graph.eliminate_dead_code()
        if not changed:
            break
    if vectorise.split_slices(gm):      # last: the rules above read slices, not splits
        vectorise.topo_sort(gm)
        gm.graph.eliminate_dead_code()
    _public_ops(gm)
    _constants_as_buffers(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


# The public torch function for each aten overload the rewrites leave: the same kernel, reached
# with less Python dispatch per call (about 12% of a titanic step), and readable code.
_PUBLIC = {aten.mm.default: torch.mm, aten.relu.default: torch.relu, aten.t.default: torch.t,
           aten.sum.dim_IntList: torch.sum, aten.sum.default: torch.sum, aten.mean.default: torch.mean,
           aten.add.Tensor: torch.add, aten.sub.Tensor: torch.sub, aten.mul.Tensor: torch.mul,
           aten.div.Tensor: torch.div, aten.div.Scalar: torch.div, aten.pow.Tensor_Scalar: torch.pow,
           aten.where.self: torch.where, aten.tanh.default: torch.tanh, aten.exp.default: torch.exp,
           aten.log.default: torch.log, aten.sqrt.default: torch.sqrt, aten.abs.default: torch.abs,
           aten.neg.default: torch.neg, aten.sigmoid.default: torch.sigmoid, aten.cat.default: torch.cat,
           aten.select.int: torch.select, aten.lt.Tensor: torch.lt, aten.gt.Tensor: torch.gt,
           aten.le.Tensor: torch.le, aten.ge.Tensor: torch.ge, aten.eq.Tensor: torch.eq,
           aten.ne.Tensor: torch.ne, aten.maximum.default: torch.maximum, aten.minimum.default: torch.minimum,
           aten.split_with_sizes.default: torch.split}
# Overloads whose public function of the same name takes the same arguments.
_SAME_NAME = ("bmm", "isfinite", "isinf", "isnan", "bitwise_not", "bitwise_or", "bitwise_and", "logical_not",
              "logical_or", "logical_and", "amax", "amin", "zeros", "ones", "full", "zeros_like", "ones_like",
              "full_like", "scalar_tensor", "clamp", "clamp_min", "clamp_max", "log10", "log1p", "expm1", "sin",
              "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "floor",
              "ceil", "round", "trunc", "sign", "remainder", "fmod", "erf", "index_select", "gather", "cumsum",
              "cumprod", "prod", "rsub", "reciprocal", "square", "softmax", "log_softmax", "argmax", "argmin",
              "any", "all", "flip", "stack", "squeeze", "unsqueeze", "permute", "transpose", "max", "min",
              "lt", "gt", "le", "ge", "eq", "ne", "pow", "div", "mul", "add", "sub", "where", "sum", "mean",
              "var", "std", "exp", "log", "sqrt", "abs", "neg", "sigmoid", "tanh", "relu", "mm", "cat", "select",
              "t", "maximum", "minimum", "arange", "matmul", "addmm", "baddbmm", "mv", "dot", "outer", "sort",
              "as_strided")
for _name in _SAME_NAME:
    _packet = getattr(aten, _name, None)
    for _overload in (_packet.overloads() if _packet is not None else ()):
        _PUBLIC.setdefault(getattr(_packet, _overload), getattr(torch, _name))
_METHODS = {aten.view.default: "view", aten.expand.default: "expand", aten._unsafe_view.default: "view",
            aten.reshape.default: "reshape", aten.clone.default: "clone", aten.alias.default: "view_as"}


def _public_ops(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in _METHODS:
            node.op, node.target = "call_method", _METHODS[node.target]
            if node.target == "view_as":
                node.args = (node.args[0], node.args[0])
        elif node.target == aten.slice.Tensor:          # x[:, a:b], a view as aten.slice is
            x, dim, *bounds = node.args
            start, end, step = (list(bounds) + [None, None, None])[:3]
            start = None if start in (0, None) else start
            end = None if end is None or end >= 2 ** 62 else end
            node.target = operator.getitem
            node.args = (x, (slice(None),) * dim + (slice(start, end, None if step in (1, None) else step),))
        elif node.target == aten.index.Tensor:          # x[i, j], as aten.index gathers
            x, indices = node.args
            node.target = operator.getitem
            node.args = (x, tuple(slice(None) if i is None else i for i in indices))
        elif node.target == aten.mse_loss.default:
            node.target = torch.nn.functional.mse_loss
            node.args, node.kwargs = node.args[:2], {"reduction": "mean" if node.args[2] == 1 else "sum"}
        elif node.target in _PUBLIC and _same_result(node, _PUBLIC[node.target]):
            node.target = _PUBLIC[node.target]


def _same_result(node: fx.Node, public) -> bool:
    """public(*args) gives node's shape and dtype, tried on meta tensors (an overload whose
    public function reads its arguments differently keeps its aten name)."""
    def meta(a: object) -> object:
        v = _val(a) if isinstance(a, fx.Node) else None
        return torch.empty(tuple(v.shape), dtype=v.dtype, device="meta") if isinstance(v, torch.Tensor) else a
    want = _val(node)
    try:
        got = public(*fx.node.map_arg(node.args, meta), **fx.node.map_arg(node.kwargs, meta))
    except Exception:
        return False
    if isinstance(want, torch.Tensor):
        return isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(want.shape) and got.dtype == want.dtype
    return isinstance(got, tuple) == isinstance(want, (tuple, list))


def _constants_as_buffers(gm: fx.GraphModule) -> None:
    """Tensor constants become buffers, so .to(device) and state_dict see them."""
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            t = getattr(gm, node.target)
            if isinstance(t, torch.Tensor) and node.target not in dict(gm.named_buffers()):
                delattr(gm, node.target)
                gm.register_buffer(node.target, t)
    for name in [n for n, _ in gm.named_buffers()]:
        if not any(n.op == "get_attr" and n.target == name for n in gm.graph.nodes):
            delattr(gm, name)


__all__ = ["optimise", "FREE"]
