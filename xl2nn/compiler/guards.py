"""Error guards a traced program does not need, and the work it repeats.

Excel's errors travel through a program as NaN: `SQRT(x)` is traced as
`where(bad, nan, sqrt(where(bad, 1, x)))` with `bad = x < 0 | ~isfinite(x)`, so that an error
is NaN (never a silent number) and its gradient stays finite for an IFERROR that discards it.
Where nothing downstream can discard or compare the value (it only flows through sums,
products, views and more guards to the objective), any non-finite number already *is* the
error: `sqrt(x)` alone is NaN or inf exactly where the guard would give NaN, and the objective
is refused when it is not finite. There the guard goes. Everywhere else it stays.

Also here: common subexpressions (a SUMXMY2 traces its difference twice), tensor factories
and constant boolean masks folded, and masks that only re-select cells already zero.
"""
from __future__ import annotations

import math

import torch
from torch import fx

from .fxutil import constant as _constant
from .fxutil import meta_value as _val
from .fxutil import new_constant, new_node

aten = torch.ops.aten

_FACTORIES = {aten.zeros.default, aten.ones.default, aten.full.default, aten.scalar_tensor.default}
# Views that keep every entry. A slice, a gather or an IF's where can drop one: the objective
# is then finite without it, and its gradient there, 0 times the unguarded function's slope
# (SQRT's at a negative number: NaN), would not be; so they carry nothing here.
_KEEP_ALL = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.t.default,
             aten.transpose.int, aten.permute.default, aten.expand.default, aten.alias.default,
             aten.cat.default, aten.squeeze.dim, aten.unsqueeze.default}
# Ops whose result is non-finite wherever an input value is (inf*0 and inf-inf are NaN; a
# sum or product with a non-finite entry is non-finite): they carry an error on unchanged.
_CARRY = _KEEP_ALL | {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.neg.default, aten.abs.default,
                     aten.sum.default, aten.sum.dim_IntList, aten.mean.default, aten.mean.dim, aten.mm.default,
                     aten.bmm.default, aten.sqrt.default, aten.log.default, aten.log10.default,
                     aten.mse_loss.default}
# Guarded functions whose plain form is already non-finite wherever the guard says error:
# the domain test each guard holds (argument, comparison, bound), and the arguments whose
# non-finite values it carries on (1/inf is 0: a divisor is not carried).
_PLAIN = {aten.sqrt.default: ({(0, aten.lt.Scalar, 0)}, {0}),
          aten.log.default: ({(0, aten.le.Scalar, 0)}, {0}),
          aten.log10.default: ({(0, aten.le.Scalar, 0)}, {0}),
          aten.div.Tensor: ({(1, aten.eq.Scalar, 0)}, {0})}


def _all(gm: fx.GraphModule, node: object, value: float | bool) -> bool:
    """node is a constant whose every entry equals value (NaN for NaN)."""
    t = _constant(gm, node)
    if t is None or t.numel() == 0:
        return False
    if isinstance(value, float) and math.isnan(value):
        return bool(torch.isnan(t).all())
    return bool((t == value).all())


def _same_shape(a: object, b: object) -> bool:
    va, vb = _val(a), _val(b)
    return va is not None and vb is not None and tuple(va.shape) == tuple(vb.shape) and va.dtype == vb.dtype


def factory(gm: fx.GraphModule, node: fx.Node) -> object:
    """zeros(), ones(), full((), nan): a small constant, so the ops on it fold."""
    if node.target not in _FACTORIES or node.all_input_nodes or _val(node) is None or _val(node).numel() > 16:
        return None
    with torch.no_grad():
        value = node.target(*node.args, **node.kwargs)
    return new_constant(gm, node, value)


def trivial(gm: fx.GraphModule, node: fx.Node) -> object:
    """x | False, x & True, x + 0, x * 1, where(True, a, b), where(c, a, a), x | x."""
    t, args = node.target, node.args
    if t in (aten.bitwise_or.Tensor, aten.logical_or.default, aten.add.Tensor, aten.sub.Tensor,
             aten.bitwise_and.Tensor, aten.logical_and.default, aten.mul.Tensor) and len(args) == 2 \
            and not node.kwargs:
        neutral = {aten.bitwise_or.Tensor: False, aten.logical_or.default: False, aten.add.Tensor: 0.0,
                   aten.sub.Tensor: 0.0, aten.bitwise_and.Tensor: True, aten.logical_and.default: True,
                   aten.mul.Tensor: 1.0}[t]
        for k in ((0, 1) if t is not aten.sub.Tensor else (0,)):
            x, c = args[k], args[1 - k]
            if _all(gm, c, neutral) and _same_shape(x, node):
                return x
        if t in (aten.bitwise_or.Tensor, aten.bitwise_and.Tensor) and args[0] is args[1]:
            return args[0]
        absorbing = {aten.bitwise_and.Tensor: False, aten.logical_and.default: False,
                     aten.bitwise_or.Tensor: True, aten.logical_or.default: True}.get(t)
        if absorbing is not None and any(_all(gm, a, absorbing) for a in args):
            return new_constant(gm, node, torch.full(tuple(_val(node).shape), absorbing, dtype=torch.bool,
                                                     device=_device(gm)))
    if t == aten.where.self:
        cond, a, b = args
        for value, pick in ((True, a), (False, b)):
            if _all(gm, cond, value) and _same_shape(pick, node):
                return pick
        if a is b and _same_shape(a, node):
            return a
    return None


def _device(gm: fx.GraphModule) -> torch.device:
    return next((t.device for t in gm.buffers()), torch.device("cpu"))


def bounded(gm: fx.GraphModule, node: fx.Node) -> object:
    """MAX(0, ...)'s 'no numbers at all' test: max(c, x) with a finite constant c is never
    -inf (min(c, x) never +inf), so x == -inf there is False; and amax over axes of length 1
    is its argument."""
    if node.target in (aten.amax.default, aten.amin.default) and _val(node.args[0]) is not None:
        dims = node.args[1] if len(node.args) > 1 else []
        if dims and all(_val(node.args[0]).shape[d] == 1 for d in dims) and _same_shape(node.args[0], node):
            return node.args[0]
    if node.target == aten.eq.Scalar and node.args[1] in (-math.inf, math.inf):
        src = node.args[0]
        op = aten.maximum.default if node.args[1] == -math.inf else aten.minimum.default
        if isinstance(src, fx.Node) and src.target == op and any(
                _constant(gm, a) is not None and bool(torch.isfinite(_constant(gm, a)).all()) for a in src.args):
            return new_constant(gm, node, torch.zeros(tuple(_val(node).shape), dtype=torch.bool, device=_device(gm)))
    return None


def isfinite(gm: fx.GraphModule, node: fx.Node) -> object:
    """mul(eq(x, x), ne(abs(x), inf)), torch.isfinite as traced, -> isfinite(x)."""
    if node.target not in (aten.mul.Tensor, aten.bitwise_and.Tensor, aten.logical_and.default):
        return None
    a, b = node.args
    for eq, ne in ((a, b), (b, a)):
        if (isinstance(eq, fx.Node) and eq.target == aten.eq.Tensor and eq.args[0] is eq.args[1]
                and isinstance(ne, fx.Node) and ne.target == aten.ne.Scalar and ne.args[1] == math.inf
                and isinstance(ne.args[0], fx.Node) and ne.args[0].target == aten.abs.default
                and ne.args[0].args[0] is eq.args[0] and _same_shape(eq, node)):
            with gm.graph.inserting_before(node):
                return new_node(gm, aten.isfinite.default, (eq.args[0],), _val(node).shape, _val(node), node)
    return None


def common_subexpressions(gm: fx.GraphModule) -> bool:
    """One node for each distinct (op, inputs) (random draws excepted: each is its own)."""
    seen: dict[tuple, fx.Node] = {}
    changed = False
    for node in list(gm.graph.nodes):
        if node.op not in ("call_function", "call_method", "get_attr"):
            continue
        tags = getattr(node.target, "tags", ())
        if torch.Tag.nondeterministic_seeded in tags:
            continue
        try:
            key = (node.op, node.target, _key(node.args), _key(node.kwargs))
            hash(key)
        except TypeError:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
        else:
            node.replace_all_uses_with(first)
            changed = True
    return changed


def _key(a: object) -> object:
    if isinstance(a, (list, tuple)):
        return (type(a).__name__, tuple(_key(x) for x in a))
    if isinstance(a, dict):
        return tuple(sorted((k, _key(v)) for k, v in a.items()))
    if isinstance(a, float) and math.isnan(a):
        return ("nan",)
    if isinstance(a, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return str(a)
    return a


# ----------------------------------------------------------------------------- zeros

def zero_mask(gm: fx.GraphModule, node: object) -> torch.Tensor | None:
    """Where node is 0 whatever the weights (a bool tensor of node's shape), if known."""
    v = _val(node)
    if v is None or not isinstance(v, torch.Tensor):
        return None
    c = _constant(gm, node)
    if c is not None:
        return torch.broadcast_to(c == 0, v.shape).cpu()
    if not isinstance(node, fx.Node) or node.op not in ("call_function", "call_method"):
        return None
    t = node.target
    if t == aten.where.self:
        cond = _constant(gm, node.args[0])
        if cond is None:
            return None
        za, zb = zero_mask(gm, node.args[1]), zero_mask(gm, node.args[2])
        cond = torch.broadcast_to(cond.cpu(), v.shape)
        za = za if za is not None else torch.zeros((), dtype=torch.bool)
        zb = zb if zb is not None else torch.zeros((), dtype=torch.bool)
        return torch.broadcast_to(torch.where(cond, za, zb), v.shape)
    if t in (aten.mul.Tensor, aten.pow.Tensor_Scalar, aten.neg.default, aten.add.Tensor, aten.sub.Tensor):
        if t == aten.pow.Tensor_Scalar and not (isinstance(node.args[1], (int, float)) and node.args[1] > 0):
            return None
        masks = [zero_mask(gm, a) for a in node.args if isinstance(a, fx.Node)]
        if t in (aten.add.Tensor, aten.sub.Tensor):      # 0 where both are
            if any(m is None for m in masks) or len(masks) != 2:
                return None
            return torch.broadcast_to(masks[0] & masks[1], v.shape)
        known = [m for m in masks if m is not None]      # 0 where either is
        if not known:
            return None
        out = known[0]
        for m in known[1:]:
            out = out | m
        return torch.broadcast_to(out, v.shape)
    if t in (aten.view.default, aten._unsafe_view.default, aten.reshape.default) \
            or (node.op == "call_method" and t == "view"):
        m = zero_mask(gm, node.args[0])
        return None if m is None else m.reshape(v.shape)
    return None


def reselect(gm: fx.GraphModule, node: fx.Node) -> object:
    """where(m, y, 0) where y is 0 wherever m is not (and where(m, 0, y) alike) -> y: SUMXMY2
    and SUMPRODUCT mask pairs that an IF already zeroed."""
    if node.target != aten.where.self:
        return None
    cond, a, b = node.args
    m = _constant(gm, cond)
    if m is None:
        return None
    for keep, other, where_other in ((a, b, ~m), (b, a, m)):
        if _all(gm, other, 0.0) and _same_shape(keep, node):
            zeros = zero_mask(gm, keep)
            if zeros is not None and bool((zeros | ~torch.broadcast_to(where_other.cpu(), zeros.shape)).all()):
                return keep
    return None


# ----------------------------------------------------------------------------- guards

def drop_guards(gm: fx.GraphModule, relaxed_output: bool) -> bool:
    """where(bad, nan, f(where(bad, 1, x))) -> f(x) where only the objective reads it (see the
    module's docstring). `relaxed_output`: the program's output counts any non-finite number
    as an error (an objective); a segment handing values to the interpreter does not."""
    changed = False
    memo: dict[fx.Node, bool] = {}
    for node in reversed(list(gm.graph.nodes)):
        plain = _unguarded(gm, node)
        if plain is None or not _carried(gm, node, relaxed_output, memo):
            continue
        f, args = plain
        with gm.graph.inserting_before(node):
            new = new_node(gm, f.target, tuple(args), _val(node).shape, _val(node), f)
        new.meta.update(f.meta)
        new.meta["val"] = _val(node)
        node.replace_all_uses_with(new)
        memo.clear()
        changed = True
    return changed


def _disjuncts(node: object) -> list[object]:
    if isinstance(node, fx.Node) and node.target in (aten.bitwise_or.Tensor, aten.logical_or.default):
        return _disjuncts(node.args[0]) + _disjuncts(node.args[1])
    return [node]


def _finite_checked(node: object) -> set[fx.Node]:
    """The x of each ~isfinite(x) among a guard's disjuncts."""
    out = set()
    for d in _disjuncts(node):
        if isinstance(d, fx.Node) and d.target in (aten.bitwise_not.default, aten.logical_not.default):
            inner = d.args[0]
            if isinstance(inner, fx.Node) and inner.target == aten.isfinite.default:
                out.add(inner.args[0])
    return out


def _unguarded(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, list[object]] | None:
    """(f, the unguarded arguments) when node is where(bad, nan, f(...)) with each of f's
    node arguments where(bad, 1, x) (or a finite constant) and every disjunct of bad a
    constant False, ~isfinite of an argument f carries, or f's own domain test."""
    if node.target != aten.where.self:
        return None
    bad, nan, f = node.args
    if not _all(gm, nan, math.nan) or not isinstance(f, fx.Node) or f.target not in _PLAIN or f.kwargs:
        return None
    domain, carries = _PLAIN[f.target]
    args: list[object] = []
    for i, a in enumerate(f.args):
        if isinstance(a, fx.Node) and a.target == aten.where.self and a.args[0] is bad and _all(gm, a.args[1], 1.0):
            x = a.args[2]
            c = _constant(gm, x)
            if i not in carries and (c is None or not bool(torch.isfinite(c).all())):
                return None
            args.append(x)
        elif _constant(gm, a) is not None and bool(torch.isfinite(_constant(gm, a)).all()):
            args.append(a)
        elif not isinstance(a, fx.Node):
            args.append(a)
        else:
            return None
    for d in _disjuncts(bad):
        if _all(gm, d, False):
            continue
        if not isinstance(d, fx.Node):
            return None
        if d.target in (aten.bitwise_not.default, aten.logical_not.default) and isinstance(d.args[0], fx.Node) \
                and d.args[0].target == aten.isfinite.default:
            x = d.args[0].args[0]
            if any(x is args[i] for i in carries if i < len(args)):
                continue
            return None
        if len(d.args) == 2 and any(d.target == op and d.args[0] is args[i] and d.args[1] == bound
                                    for i, op, bound in domain if i < len(args)):
            continue
        return None
    va = [_val(a) for a in args if isinstance(a, fx.Node)]
    shape = torch.broadcast_shapes(*(tuple(v.shape) for v in va)) if va else ()
    return (f, args) if tuple(shape) == tuple(_val(node).shape) else None


def _carried(gm: fx.GraphModule, node: fx.Node, relaxed_output: bool, memo: dict[fx.Node, bool]) -> bool:
    """Every reader of node carries a non-finite value on to the objective, or tests it for
    finiteness in a guard that itself reaches the objective as NaN. Then wherever node is not
    finite the objective is not either, so neither its value nor its gradient there matters."""
    if node in memo:
        return memo[node]
    memo[node] = False                       # while this is being decided (only stops recursion)

    def carried(n: fx.Node) -> bool:
        return _carried(gm, n, relaxed_output, memo)

    ok = True
    for u in node.users:
        if u.op == "output":
            ok = relaxed_output
        elif u.target == aten.isfinite.default or _is_comparison(u):
            ok = all(b is not None and node in _finite_checked(b) and _guard_reaches(gm, b, carried)
                     for b in _masks(u))
        elif u.target == aten.where.self and u.args[0] is not node:
            # where(bad, 1, x) of a guard that reaches the objective, or where(c, x, nan): an
            # entry dropped there is an error anyway. Any other where can drop x's error.
            other = u.args[1] if u.args[2] is node else u.args[2]
            ok = (node in _finite_checked(u.args[0]) and _guard_reaches(gm, u.args[0], carried)) \
                or (_all(gm, other, math.nan) and carried(u))
        elif u.target in _CARRY or (u.op == "call_method" and u.target in ("view", "expand")):
            ok = carried(u)
        elif u.target == aten.div.Tensor:
            ok = u.args[0] is node and u.args[1] is not node and carried(u)
        elif u.target == aten.pow.Tensor_Scalar:
            ok = isinstance(u.args[1], (int, float)) and u.args[1] > 0 and carried(u)
        else:
            ok = False
        if not ok:
            break
    memo[node] = ok
    return ok


def _guard_reaches(gm: fx.GraphModule, bad: fx.Node, carried) -> bool:
    """Some where(bad, nan, ...) reaches the objective: wherever bad holds, it is NaN."""
    return any(u.target == aten.where.self and u.args[0] is bad and _all(gm, u.args[1], math.nan) and carried(u)
               for u in bad.users)


def _is_comparison(u: fx.Node) -> bool:
    return u.target in (aten.lt.Scalar, aten.le.Scalar, aten.gt.Scalar, aten.ge.Scalar, aten.eq.Scalar)


def _masks(d: fx.Node) -> list[fx.Node | None]:
    """The conditions of wheres that the test d is a disjunct of (through a not, for
    isfinite); None where d is read by anything else."""
    out: list[fx.Node | None] = []
    for u in d.users:
        if u.target in (aten.bitwise_or.Tensor, aten.logical_or.default) or (
                d.target == aten.isfinite.default and u.target in (aten.bitwise_not.default, aten.logical_not.default)):
            out.extend(_masks(u))
        elif u.target == aten.where.self and u.args[0] is d:
            out.append(d)
        else:
            out.append(None)
    return out


__all__ = ["factory", "bounded", "trivial", "isfinite", "common_subexpressions", "zero_mask", "reselect", "drop_guards"]
