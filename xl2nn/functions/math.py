"""Math & Trig functions."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..cells import CellError
from .aggregate import Numbers
from .criteria import SUM, multiple, single
from .operators import ARITHMETIC
from .registry import Context, Elementwise, argument, excel, first_error, with_errors
from .values import DIV0, ERROR, NUM, NUM_ERR, VALUE, Val, from_objects, scalar, to_objects


def _safe(fn):
    def run(*xs: float) -> float | CellError:
        try:
            r = fn(*xs)
        except (ValueError, ArithmeticError):      # overflow, division, decimal.InvalidOperation
            return NUM_ERR
        return NUM_ERR if isinstance(r, float) and (math.isinf(r) or math.isnan(r)) else r
    return run


def _log(x: float, base: float = 10.0) -> float:
    return math.log(x) / math.log(base)


_MOD_LIMIT = 2.0 ** 53      # past this quotient no digit of the remainder is left: an error


def _excel_mod(a: float, b: float) -> float | CellError:
    if b == 0:
        return DIV0
    r = a - b * math.floor(a / b)
    # A remainder rounded up to the divisor itself (MOD(1E-20,-3)) has no right answer left:
    # LibreOffice calls it an error, and so do we.
    return NUM_ERR if abs(a / b) >= _MOD_LIMIT or r == b else r


_UNARY = {
    "EXP": Elementwise(torch.exp, _safe(math.exp), domain_error=lambda x: x > 709.78),
    "LN": Elementwise(torch.log, _safe(math.log), domain_error=lambda x: x <= 0),
    "LOG10": Elementwise(torch.log10, _safe(math.log10), domain_error=lambda x: x <= 0),
    "SQRT": Elementwise(torch.sqrt, _safe(math.sqrt), domain_error=lambda x: x < 0),
    "ABS": Elementwise(torch.abs, abs),
    "TANH": Elementwise(torch.tanh, math.tanh),
    # + 0*x: an error (inf in training) stays one, where torch.sign would make it ±1.
    "SIGN": Elementwise(lambda x: torch.sign(x) + 0 * x, lambda x: float((x > 0) - (x < 0))),
    "INT": Elementwise(torch.floor, lambda x: float(math.floor(x))),
    # Trigonometry: positional encodings, rotations, angles.
    "SIN": Elementwise(torch.sin, math.sin),
    "COS": Elementwise(torch.cos, math.cos),
    "TAN": Elementwise(torch.tan, math.tan),
    "ASIN": Elementwise(torch.asin, _safe(math.asin), domain_error=lambda x: x.abs() > 1),
    "ACOS": Elementwise(torch.acos, _safe(math.acos), domain_error=lambda x: x.abs() > 1),
    "ATAN": Elementwise(torch.atan, math.atan),
    "SINH": Elementwise(torch.sinh, _safe(math.sinh), domain_error=lambda x: x.abs() > 710.47),
    "COSH": Elementwise(torch.cosh, _safe(math.cosh), domain_error=lambda x: x.abs() > 710.47),
    "DEGREES": Elementwise(torch.rad2deg, math.degrees),
    "RADIANS": Elementwise(torch.deg2rad, math.radians),
}


def _make_unary(name: str, ew: Elementwise) -> None:
    def impl(args: list[Val | None], ctx: Context) -> Val:
        return ew([argument(args, 0, ctx, omitted=0.0)], ctx)
    excel(name, "Math & Trig", min_args=1, max_args=1,
          differentiable=name not in ("SIGN", "INT"))(impl)


for _name, _ew in _UNARY.items():
    _make_unary(_name, _ew)


_LOG = Elementwise(lambda x, b: torch.log(x) / torch.log(b), _safe(_log),
                   domain_error=lambda x, b: (x <= 0) | (b <= 0) | (b == 1))
_POWER = ARITHMETIC["^"]        # POWER(a, b) is a^b, errors and all
_MOD = Elementwise(lambda a, b: a - b * torch.floor(a / b), _excel_mod,
                   domain_error=lambda a, b: (b == 0) | ((a / b).abs() >= _MOD_LIMIT)
                   | (a - b * torch.floor(a / b) == b))


@excel("LOG", "Math & Trig", min_args=1, max_args=2)
def log(args: list[Val | None], ctx: Context) -> Val:
    base = argument(args, 1, ctx, 10.0, omitted=10.0)
    return _LOG([argument(args, 0, ctx, omitted=0.0), base], ctx)


_ATAN2 = Elementwise(lambda x, y: torch.atan2(y, x), lambda x, y: DIV0 if x == 0 and y == 0 else math.atan2(y, x),
                     domain_error=lambda x, y: (x == 0) & (y == 0))


@excel("ATAN2", "Math & Trig", min_args=2, max_args=2)
def atan2(args: list[Val | None], ctx: Context) -> Val:
    # Excel's argument order is (x, y), the reverse of C's atan2(y, x).
    return _ATAN2([argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx)


def _paired(args: list[Val | None], ctx: Context, term) -> Val:
    """SUMXMY2 and kin: sum of term(x, y) over the pairs where both entries are numbers."""
    x, y = argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)
    f = max(x.num.shape[0], y.num.shape[0])
    if x.num.shape[1:] != y.num.shape[1:]:
        return _whole_error(Val(torch.zeros((f, 1, 1), dtype=torch.float64), NUM), CellError("#N/A"), ctx)
    both = torch.as_tensor((x.kinds() == NUM) & (y.kinds() == NUM), device=x.num.device)
    zero = torch.zeros((), dtype=x.num.dtype, device=x.num.device)
    t = torch.where(both, term(torch.where(both, x.num, zero), torch.where(both, y.num, zero)), zero)
    return with_errors(Val(t.sum(dim=(1, 2), keepdim=True), NUM), _array_errors([x, y]), ctx.device)


@excel("SUMXMY2", "Math & Trig", min_args=2, max_args=2, args="A")
def sumxmy2(args: list[Val | None], ctx: Context) -> Val:
    return _paired(args, ctx, lambda x, y: (x - y) * (x - y))       # a squared error, summed


@excel("SUMX2MY2", "Math & Trig", min_args=2, max_args=2, args="A")
def sumx2my2(args: list[Val | None], ctx: Context) -> Val:
    return _paired(args, ctx, lambda x, y: x * x - y * y)


@excel("SUMX2PY2", "Math & Trig", min_args=2, max_args=2, args="A")
def sumx2py2(args: list[Val | None], ctx: Context) -> Val:
    return _paired(args, ctx, lambda x, y: x * x + y * y)


@excel("POWER", "Math & Trig", min_args=2, max_args=2)
def power(args: list[Val | None], ctx: Context) -> Val:
    return _POWER([argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx)


@excel("MOD", "Math & Trig", min_args=2, max_args=2, differentiable=False)
def mod(args: list[Val | None], ctx: Context) -> Val:
    return _MOD([argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx)


@excel("SUM", "Math & Trig", args="R")
def sum_(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.sum(), NUM), n.errors, ctx.device)


@excel("SUMSQ", "Math & Trig", args="R")
def sumsq(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    return with_errors(Val(n.sum(lambda x: x * x), NUM), n.errors, ctx.device)


def _array_errors(args: list[Val]) -> np.ndarray | None:
    codes = None
    for a in args:
        e = first_error(a)
        if e is None:
            continue
        codes = e if codes is None else np.where(codes == None, e, codes)  # noqa: E711
    return codes


def _whole_error(v: Val, code: CellError, ctx: Context) -> Val:
    objs = np.empty(v.num.shape, dtype=object)
    objs[...] = code
    return from_objects(objs, ctx.device)


@excel("SUMPRODUCT", "Math & Trig", min_args=1, args="A")
def sumproduct(args: list[Val | None], ctx: Context) -> Val:
    vals = [argument(args, i, ctx, omitted=0.0) for i in range(len(args))]
    shapes = {v.num.shape[1:] for v in vals}
    f = max(v.num.shape[0] for v in vals)
    if len(shapes) != 1:
        return _whole_error(Val(torch.zeros((f, 1, 1), dtype=torch.float64), NUM), VALUE, ctx)
    nums = []
    for v in vals:
        # Text, booleans and empty entries count as 0 in SUMPRODUCT's arrays.
        k = v.uniform()
        if k == NUM:
            nums.append(v.num)
        else:
            keep = torch.as_tensor(v.kinds() == NUM, device=v.num.device)
            nums.append(torch.where(keep, v.num, torch.zeros((), dtype=v.num.dtype, device=v.num.device)))
    if len(nums) == 2:
        a, b = nums
        h, w = a.shape[1:]
        if a.shape[0] == 1 or b.shape[0] == 1:
            # One side is shared by every cell: a matrix-vector product, no F×k temporary.
            rows, vec = (b, a) if a.shape[0] == 1 else (a, b)
            out = torch.matmul(rows.reshape(rows.shape[0], h * w), vec.reshape(h * w, 1))
            result = out.reshape(-1, 1, 1)
        else:
            result = (a * b).sum(dim=(1, 2), keepdim=True)
    else:
        prod = nums[0]
        for x in nums[1:]:
            prod = prod * x
        result = prod.sum(dim=(1, 2), keepdim=True)
    return with_errors(Val(result, NUM), _array_errors(vals), ctx.device)


@excel("MMULT", "Math & Trig", min_args=2, max_args=2, args="A")
def mmult(args: list[Val | None], ctx: Context) -> Val:
    a, b = argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)
    f = max(a.num.shape[0], b.num.shape[0])
    if a.uniform() == NUM and b.uniform() == NUM and a.num.shape[2] == b.num.shape[1]:
        return Val(torch.matmul(a.num, b.num), NUM)
    # Text, booleans or blanks anywhere, or shapes that do not chain: all #VALUE!, as documented.
    ka, kb = a.kinds(), b.kinds()
    plain = np.isin(ka, (NUM, ERROR)).all() and np.isin(kb, (NUM, ERROR)).all()
    if a.num.shape[2] != b.num.shape[1] or not plain:
        return _whole_error(Val(torch.zeros((f, a.num.shape[1], b.num.shape[2]), dtype=torch.float64),
                                NUM), VALUE, ctx)
    # An error value spoils the rows (of a) and columns (of b) it takes part in, no more.
    zero = torch.zeros((), dtype=a.num.dtype, device=a.num.device)
    ea, eb = torch.as_tensor(ka == ERROR), torch.as_tensor(kb == ERROR)
    out = torch.matmul(torch.where(ea, zero, a.num), torch.where(eb, zero, b.num))
    objs = to_objects(Val(out, NUM))
    ta = np.broadcast_to(a.text, ka.shape) if a.text is not None else None
    tb = np.broadcast_to(b.text, kb.shape) if b.text is not None else None
    for k, i, j in np.ndindex(*objs.shape):
        ra, cb = ka[min(k, ka.shape[0] - 1), i], kb[min(k, kb.shape[0] - 1), :, j]
        if (ra == ERROR).any():
            objs[k, i, j] = CellError(ta[min(k, ka.shape[0] - 1), i][np.argmax(ra == ERROR)])
        elif (cb == ERROR).any():
            objs[k, i, j] = CellError(tb[min(k, kb.shape[0] - 1), :, j][np.argmax(cb == ERROR)])
    return from_objects(objs, ctx.device)


@excel("TRANSPOSE", "Lookup & Reference", min_args=1, max_args=1, args="A")
def transpose(args: list[Val | None], ctx: Context) -> Val:
    v = argument(args, 0, ctx, omitted=0.0)
    kind = v.kind.transpose(0, 2, 1) if isinstance(v.kind, np.ndarray) else v.kind
    text = v.text.transpose(0, 2, 1) if v.text is not None else None
    return Val(v.num.transpose(1, 2), kind, text)


@excel("PI", "Math & Trig", max_args=0, differentiable=False)
def pi(args: list[Val | None], ctx: Context) -> Val:
    return Val(torch.full((1, 1, 1), math.pi, dtype=torch.float64, device=ctx.device), NUM)


@excel("SEQUENCE", "Math & Trig", min_args=1, max_args=4)
def sequence(args: list[Val | None], ctx: Context) -> Val:
    """SEQUENCE(rows, [columns], [start], [step]): start, start+step, ... row by row. The
    size must be the same for every cell of the family (it is the shape of the array)."""
    size = []
    for i, default in ((0, 1), (1, 1)):
        v = args[i] if i < len(args) and args[i] is not None else None
        if v is None:
            size.append(default)
            continue
        if not v.numeric:
            return scalar(VALUE, ctx.device)
        if bool((v.num != v.num.reshape(-1)[0]).any()):
            from .arrays import Ragged      # sizes differ from cell to cell: computed one by one
            raise Ragged("SEQUENCE makes arrays of different sizes in the cells of one formula")
        size.append(int(math.trunc(float(v.num.reshape(-1)[0]))))
    rows, cols = size
    if rows < 1 or cols < 1:
        return scalar(CellError("#CALC!"), ctx.device)
    start = argument(args, 2, ctx, 1.0, omitted=1.0)
    step = argument(args, 3, ctx, 1.0, omitted=1.0)
    if not (start.numeric and step.numeric):
        return scalar(VALUE, ctx.device)
    k = torch.arange(rows * cols, dtype=torch.float64, device=ctx.device).reshape(1, rows, cols)
    return Val(start.num.reshape(-1, 1, 1) + step.num.reshape(-1, 1, 1) * k, NUM)


@excel("PRODUCT", "Math & Trig", min_args=1, args="R")
def product(args: list[Val | None], ctx: Context) -> Val:
    n = Numbers(args, ctx)
    total = None
    for num, mask in n.parts:
        x = num if mask is None else torch.where(mask, num, torch.ones((), dtype=num.dtype, device=num.device))
        p = x.reshape(x.shape[0], -1).prod(dim=1).reshape(-1, 1, 1)
        total = p if total is None else total * p
    count = n.count()
    if total is None:
        total = torch.zeros((1, 1, 1), dtype=torch.float64, device=ctx.device)
    # No numbers at all: 0, not the empty product 1.
    # (An overflow to inf becomes #NUM! where every formula's result is checked: interpret.)
    result = Val(torch.where(count == 0, torch.zeros_like(total), total), NUM)
    return with_errors(result, n.errors, ctx.device)


# -- conditional sums (criteria.py) ------------------------------------------------------------

@excel("SUMIF", "Math & Trig", min_args=2, max_args=3, args="RVR")
def sumif(args: list[Val | None], ctx: Context) -> Val:
    return single(args, SUM, ctx)


# The sum range, then (range, criterion) pairs: "R" + "RV"*127 reads every range whole and
# every criterion as a value.
@excel("SUMIFS", "Math & Trig", min_args=3, max_args=255, args="R" + "RV" * 127)
def sumifs(args: list[Val | None], ctx: Context) -> Val:
    return multiple(args, SUM, ctx)
