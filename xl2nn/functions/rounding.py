"""Math & Trig: rounding to digits and to multiples (ROUND, ROUNDUP, ROUNDDOWN, TRUNC, CEILING,
FLOOR, CEILING.MATH, FLOOR.MATH, QUOTIENT).

Each has an exact scalar form (Decimal arithmetic on the number as Excel shows it: the
reference, and the path for text, booleans and errors) and a torch form that training traces.
The torch forms give the scalar forms' very doubles without leaving float64, from three exact
facts: 10^0 .. 10^22 are doubles (5^22 < 2^53), so one product or quotient of an integer by
one is correctly rounded, i.e. the double nearest the decimal; Dekker's two-product gives a
product's rounding error exactly; fmod is exact. (torch.compile may fuse a*b+c into an FMA,
which two-product and Excel's own a-b*q do not expect: the compiled program can differ in a
last bit.) They use only ops that ONNX exports (no nextafter, copysign or frexp).

The results are piecewise constant: they are computed from detached inputs and joined to
them by `+ 0*input`, a zero gradient that also carries an error (a non-finite input) on.
Where the torch form is not exact (digits past ±22, magnitudes past 1E+37), eval takes the
scalar path; training does too for constant digits (see _by_digits).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Context as DecimalContext, Decimal
from fractions import Fraction

import torch

from ..cells import CellError
from .tracing import HostRead
from .math import _safe
from .registry import Context, Elementwise, argument, excel
from .values import DIV0, NUM_ERR, Val, fit

_WIDE = DecimalContext(prec=1000)     # quantize needs every digit up to the place rounded to
_EXACT = 22                           # 10^k is an exact double for 0 <= k <= 22
_POW = torch.tensor([float(10 ** k) for k in range(_EXACT + 1)], dtype=torch.float64)


def _least_double_from(e: int) -> float:
    """The least double >= 10^e: 10^e <= a exactly where this <= a."""
    exact = Fraction(10) ** e
    v = float(exact)
    return v if Fraction(v) >= exact else math.nextafter(v, math.inf)


# Decades 1E-30 .. 1E+40: past them the 15-digit forms are not exact anyway (or are trivially).
_E0 = -30
_DECADES = torch.tensor([_least_double_from(e) for e in range(_E0, 41)], dtype=torch.float64)


def _pow10(k: torch.Tensor) -> torch.Tensor:
    """10^k, exactly, for integer-valued k in [0, 22] (clamped into it; NaN reads as 0)."""
    return _POW.to(k.device)[torch.nan_to_num(k, nan=0.0).clamp(0, _EXACT).long()]


def _scale(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The double nearest v·10^k, for integer-valued v < 2^53 and |k| <= 22 (one rounding)."""
    p = _pow10(k.abs())
    return torch.where(k >= 0, v * p, v / p)


def _split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = v * 134217729.0           # 2^27 + 1: hi keeps 26 bits, lo the rest
    hi = c - (c - v)
    return hi, v - hi


def _two_product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p = fl(a·b) and e with a·b = p + e exactly (Dekker; |a·b| well inside the double range)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _half_gaps(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the distance from a (normal, >= 2^-960) to the doubles below and above it: Rump,
    Zimmermann, Boldo & Melquiond's predecessor and successor, a -/+ a·u(1+2u) with u = 2^-53."""
    e = a * (2.0 ** -53 + 2.0 ** -105)
    return (a - (a - e)) / 2, ((a + e) - a) / 2


def _signed(r: torch.Tensor, like: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """r (>= 0, detached) with like's sign, joined to the inputs by a zero gradient (NaN for a
    non-finite input: an error stays one)."""
    r = torch.where(like.detach() < 0, -r, r)
    for x in inputs:
        r = r + 0 * x
    return r


# -- ROUND: half away from zero, on the decimal Excel shows ----------------------------------------

def _round_half_up(x: float, digits: float) -> float:
    d = int(digits)
    if d > 400 or not math.isfinite(x):      # finer than any double's last digit: x itself
        return x
    if d < -400:
        return 0.0
    q = Decimal(1).scaleb(-d)
    # repr() gives the shortest decimal that reads back as x: Excel rounds what it shows.
    # Enough precision for any double's digits at any place (1E+200 to 4 places).
    return float(Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP, context=_WIDE))


def _round_t(x: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """_round_half_up's doubles, for |digits| <= 22 (past that: x for d > 22, 0 for d < -22,
    right for |x| >= 1E-5 and |x| < 4E+22 respectively; constant digits there take the scalar
    path, see _by_digits).

    Let a = |x|, D its shortest decimal (repr), n·10^-d <= D < (n+1)·10^-d and T = (n+½)·10^-d.
    The reals that read back as a form an interval I around a. If I holds a multiple of 10^-d,
    D has at most d decimals and is its own rounding: a. Else D is past T (round up) when T is
    below I; when T is inside I, D is the tenth of a unit nearest a, past T iff a > (n+0.45)·10^-d.
    Rounding to a double is monotonic, so "k·10^-d in I" is fl(k·10^-d) == a, one exact op."""
    a = x.detach().abs()
    d = torch.trunc(digits.detach())
    dd = d.clamp(-_EXACT, _EXACT)
    pos = dd >= 0
    p10 = _pow10(dd.abs())
    zero = torch.zeros((), dtype=a.dtype, device=a.device)

    def near(k: torch.Tensor) -> torch.Tensor:        # the double nearest k·10^-d
        return torch.where(pos, k / p10, k * p10)

    q = torch.where(pos, a * p10, a / p10)            # ~ a·10^d; its integer part n is f or f-1
    f = torch.floor(q)
    nf = near(f)
    # From q >= 2^53 on, neighbouring doubles are 10^-d or more apart: I always holds a multiple.
    own = (nf == a) | (near(f - 1) == a) | (near(f + 1) == a) | (q >= 2.0 ** 53)
    n = torch.where(nf < a, f, f - 1)
    # Where exactness needs more than fl(): the offset of a from n·10^-d, exact where it is read.
    p, e = _two_product(a, p10)
    frac = (p - n) + e                                # d >= 0, in units of 10^-d
    rem = torch.fmod(a, p10)                          # d < 0
    past = (pos & (frac >= 0.45)) | (~pos & (rem > 4.5 * (p10 / 10)))    # a > (n+0.45)·10^-d
    t = near(n + 0.5)                                 # T's double (n + 0.5 exact below 2^52)
    up = (t < a) | ((t == a) & past)
    # 2^52 <= q < 2^53: n + 0.5 is no double, but there the gap and T - a are (in units of 10^-d).
    below, above = _half_gaps(a)
    below, above = torch.where(pos, below * p10, below), torch.where(pos, above * p10, above)
    gap = torch.where(pos, 0.5 - frac, p10 / 2 - rem)                # T - a
    wide = q >= 2.0 ** 52           # (no torch.where on booleans: onnxruntime has none)
    up = (~wide & up) | (wide & ((gap < -below) | ((gap <= above) & past)))
    r = torch.where(own, a, near(n + up.to(a.dtype)))
    r = torch.where(d > _EXACT, a, torch.where(d < -_EXACT, zero, r))
    return _signed(r, x, x, digits)


# -- ROUNDUP, ROUNDDOWN, TRUNC: toward or away from zero, on 15 significant digits -------------------

def _fifteen(x: float) -> float:
    """x to the 15 significant digits Excel keeps (3*3.3 is 9.9, not 9.899999999999999)."""
    return float(f"{x:.15g}")


def _round_toward(x: float, digits: float, away: bool) -> float | CellError:
    d = int(digits)      # digits are truncated toward zero: ROUNDUP(2.5,-0.5) rounds to units
    if d < -400:         # past every float's magnitude
        return 0.0 if not away or x == 0 else NUM_ERR
    try:
        q = Decimal(1).scaleb(-d)
        return float(Decimal(f"{x:.15g}").quantize(q, rounding=ROUND_UP if away else ROUND_DOWN, context=_WIDE))
    except ArithmeticError:
        return x         # more digits asked for than the number has (to 15 digits)


def _fifteen_digits(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k): f"{a:.15g}" (half to even) is N·10^-k, N an integer in [1E14, 1E15]; for a > 0,
    exact for 1E-8 <= a < 1E37 (|k| <= 22)."""
    e = torch.bucketize(a, _DECADES.to(a.device), right=True) - 1 + _E0   # 10^e <= a < 10^(e+1)
    # (N is wrong past the table or with |k| > 22: only where no digit of it is kept, or inexact15)
    k = (14 - e).to(a.dtype)
    p10 = _pow10(k.abs())
    p, err = _two_product(a, p10)                     # k >= 0: a·10^k = p + err
    i = torch.round(p)                                # half to even; a tie in p is decided by err
    n_up = i + ((p - i == 0.5) & (err > 0)).to(a.dtype) - ((p - i == -0.5) & (err < 0)).to(a.dtype)
    rem = torch.fmod(a, p10)                          # k < 0: a = m·10^-k + rem
    m = torch.round((a - rem) / p10)
    n_dn = m + ((rem > p10 / 2) | ((rem == p10 / 2) & (torch.fmod(m, 2) == 1))).to(a.dtype)
    return torch.where(k >= 0, n_up, n_dn), k


def _quantize15(a: torch.Tensor, d: torch.Tensor, away: torch.Tensor | bool) -> torch.Tensor:
    """a >= 0 to 15 digits, then to d decimals toward (or away from) zero: _round_toward's
    doubles (see _inexact15 for where they are not)."""
    n, k = _fifteen_digits(a)
    j = k - d                                         # digits of N past the d-th decimal
    pj = _pow10(j.clamp(0, 15))
    rem = torch.fmod(n, pj)
    away = torch.as_tensor(away, device=a.device)
    kept = (n - rem) / pj + (away & (rem > 0)).to(a.dtype)
    kept = torch.where(j > 15, (away & (a > 0)).to(a.dtype), kept)    # N all past it: 0 or 1 unit
    r = torch.where(j <= 0, _scale(n, -k), _scale(kept, -d))
    return torch.where(a == 0, a, r)


def _inexact15(x: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Where _quantize15 is not exact: 10^k or 10^d past 10^22."""
    a, d = x.abs(), torch.trunc(digits)
    return (d.abs() > _EXACT) | (a >= 1e37) | ((a < 1e-8) & (d >= 8))


def _round_toward_t(x: torch.Tensor, digits: torch.Tensor, away: bool) -> torch.Tensor:
    r = _quantize15(x.detach().abs(), torch.trunc(digits.detach()), away)
    return _signed(r, x, x, digits)


def _wide(x: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    return torch.trunc(digits).abs() > _EXACT


# -- to digits: the Excel functions ----------------------------------------------------------------

# No domain_error: none of these is an Excel error on numbers, but an overflow (inf, #NUM!).
_ROUND = Elementwise(_round_t, _safe(_round_half_up))
_ROUNDUP = Elementwise(lambda x, d: _round_toward_t(x, d, True), _safe(lambda x, d: _round_toward(x, d, True)))
_ROUNDDOWN = Elementwise(lambda x, d: _round_toward_t(x, d, False), _safe(lambda x, d: _round_toward(x, d, False)))


def _exactly(ew: Elementwise, vals: list[Val], ctx: Context, inexact: Callable[..., torch.Tensor]) -> Val:
    """ew, but eval sends a block with entries the torch form does not get exactly to the
    scalar path (eval may read every number on the host)."""
    vals = fit(vals)
    if ctx.checked and all(v.numeric for v in vals) and bool(inexact(*(v.num for v in vals)).any()):
        return ew.slow(vals, ctx)
    return ew(vals, ctx)


def _by_digits(args: list[Val | None], ctx: Context, ew: Elementwise,
               inexact: Callable[..., torch.Tensor]) -> Val:
    """(number, digits). Training may not read parameter-dependent numbers, but digits are nearly
    always constants (a literal), and those it reads: past ±22 (10^d no exact double) the scalar
    path, which in a trace makes the model fall back with this function named. Digits that depend
    on the parameters (HostRead) stay in torch, exact within ±22."""
    vals = fit([argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, 0.0, omitted=0.0)])
    if not ctx.checked and all(v.numeric for v in vals):
        try:
            wide = bool(_wide(vals[0].num, vals[1].num).any())
        except HostRead:
            wide = False
        if wide:
            return ew.slow(vals, ctx)
    return _exactly(ew, vals, ctx, inexact)


@excel("ROUND", "Math & Trig", min_args=1, max_args=2, differentiable=False)
def round_(args: list[Val | None], ctx: Context) -> Val:
    return _by_digits(args, ctx, _ROUND, _wide)


@excel("ROUNDUP", "Math & Trig", min_args=1, max_args=2, differentiable=False)
def roundup(args: list[Val | None], ctx: Context) -> Val:
    return _by_digits(args, ctx, _ROUNDUP, _inexact15)


@excel("ROUNDDOWN", "Math & Trig", min_args=1, max_args=2, differentiable=False)
def rounddown(args: list[Val | None], ctx: Context) -> Val:
    return _by_digits(args, ctx, _ROUNDDOWN, _inexact15)


@excel("TRUNC", "Math & Trig", min_args=1, max_args=2, differentiable=False)
def trunc(args: list[Val | None], ctx: Context) -> Val:
    return _by_digits(args, ctx, _ROUNDDOWN, _inexact15)


# -- to multiples ----------------------------------------------------------------------------------

def _int15(q: torch.Tensor, away: torch.Tensor | bool) -> torch.Tensor:
    """_fifteen(q) to an integer, toward (or away from) zero; exact for |q| < 1E37. Zero gradient."""
    qa = q.detach()
    return _signed(_quantize15(qa.abs(), torch.zeros_like(qa), away), q, q)


def _ceiling_s(x: float, s: float) -> float | CellError:
    if s == 0:
        return 0.0
    if x > 0 and s < 0:
        return NUM_ERR
    # A negative multiple rounds away from zero: ceil(x/s)*s with both negative does.
    return math.ceil(_fifteen(x / s)) * s


def _floor_s(x: float, s: float) -> float | CellError:
    if s == 0:
        return 0.0 if x == 0 else DIV0
    if x > 0 and s < 0:
        return NUM_ERR
    return math.floor(_fifteen(x / s)) * s


def _multiple_t(x: torch.Tensor, s: torch.Tensor, up: torch.Tensor | bool) -> torch.Tensor:
    """ceil (where `up`) or floor of _fifteen(x/s), times s; 0 where s is 0. The gradient is the
    true one: 0 for x, the multiple count for s."""
    q = _quotient(x, s)
    up = torch.as_tensor(up, device=x.device)
    r = _int15(q, (q.detach() < 0) ^ up) * s      # ceil is away from zero above it, floor below
    return torch.where(s == 0, torch.zeros_like(r), r)


def _quotient(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x / torch.where(s == 0, torch.ones_like(s), s)


def _unbounded(x: torch.Tensor, s: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """x/s overflows: #NUM!."""
    return ~torch.isfinite(_quotient(x, s))


def _huge(x: torch.Tensor, s: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    """x/s past what _int15 does exactly."""
    return ~(_quotient(x, s).abs() < 1e37)


_CEILING = Elementwise(lambda x, s: _multiple_t(x, s, True), _safe(_ceiling_s),
                       domain_error=lambda x, s: ((x > 0) & (s < 0)) | _unbounded(x, s))
_FLOOR = Elementwise(lambda x, s: _multiple_t(x, s, False), _safe(_floor_s),
                     domain_error=lambda x, s: ((x > 0) & (s < 0)) | ((s == 0) & (x != 0)) | _unbounded(x, s))


def _math_s(x: float, s: float, mode: float, ceiling: bool) -> float:
    s = abs(s)           # the multiple's sign is ignored; mode picks the direction for x < 0
    if s == 0:
        return 0.0
    q = _fifteen(x / s)
    flip = x < 0 and mode != 0
    return (math.ceil(q) if ceiling != flip else math.floor(q)) * s


def _math_t(x: torch.Tensor, s: torch.Tensor, mode: torch.Tensor, ceiling: bool) -> torch.Tensor:
    flip = (x < 0) & (mode != 0)
    return _multiple_t(x, s.abs(), ~flip if ceiling else flip)


_CEILING_MATH = Elementwise(lambda x, s, m: _math_t(x, s, m, True),
                            _safe(lambda x, s, m: _math_s(x, s, m, True)),
                            domain_error=_unbounded)
_FLOOR_MATH = Elementwise(lambda x, s, m: _math_t(x, s, m, False),
                          _safe(lambda x, s, m: _math_s(x, s, m, False)),
                          domain_error=_unbounded)


@excel("CEILING", "Math & Trig", min_args=2, max_args=2, differentiable=False)
def ceiling(args: list[Val | None], ctx: Context) -> Val:
    return _exactly(_CEILING, [argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx,
                    _huge)


@excel("FLOOR", "Math & Trig", min_args=2, max_args=2, differentiable=False)
def floor(args: list[Val | None], ctx: Context) -> Val:
    return _exactly(_FLOOR, [argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx,
                    _huge)


def _math_args(args: list[Val | None], ctx: Context) -> list[Val]:
    """number, significance (omitted: 1), mode (omitted: 0)."""
    return [argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, 1.0, omitted=1.0),
            argument(args, 2, ctx, 0.0, omitted=0.0)]


@excel("CEILING.MATH", "Math & Trig", min_args=1, max_args=3, differentiable=False)
def ceiling_math(args: list[Val | None], ctx: Context) -> Val:
    return _exactly(_CEILING_MATH, _math_args(args, ctx), ctx, _huge)


@excel("FLOOR.MATH", "Math & Trig", min_args=1, max_args=3, differentiable=False)
def floor_math(args: list[Val | None], ctx: Context) -> Val:
    return _exactly(_FLOOR_MATH, _math_args(args, ctx), ctx, _huge)


def _quotient_s(a: float, b: float) -> float | CellError:
    return DIV0 if b == 0 else float(math.trunc(_fifteen(a / b)))


_QUOTIENT = Elementwise(lambda a, b: _int15(a / b, False), _safe(_quotient_s),
                        domain_error=lambda a, b: (b == 0) | _unbounded(a, b))


@excel("QUOTIENT", "Math & Trig", min_args=2, max_args=2, differentiable=False)
def quotient(args: list[Val | None], ctx: Context) -> Val:
    return _exactly(_QUOTIENT, [argument(args, 0, ctx, omitted=0.0), argument(args, 1, ctx, omitted=0.0)], ctx,
                    _huge)


# -- VALUE(TEXT(x, "0.00")): what the number shows, read back --------------------------------------
# A sheet that rounds by formatting (=VALUE(TEXT(x,"0.00")), --TEXT(x,"0.0")) computes a
# piecewise-constant function of x: TEXT writes x's 15 significant digits rounded half up to
# the format's decimals. For plain fixed formats it has this torch form; the interpreter uses
# it in unchecked runs (training), so such a model traces instead of reading text on the host.
FIXED_FORMAT = re.compile(r"^[#,]*0(?:\.(0{1,7}))?$")
_TEXT_LIMIT = 1e37          # _fifteen_digits is exact below this; above, an error (NaN), not a guess


def fixed_decimals(fmt: str) -> int | None:
    """The decimals of a plain fixed format ("0", "0.00", "#,##0.0"), else None."""
    m = FIXED_FORMAT.match(fmt)
    return None if m is None else len(m.group(1) or "")


def text_value_t(x: torch.Tensor, decimals: int) -> torch.Tensor:
    """VALUE(TEXT(x, fixed format with `decimals` places)) for numbers x, zero gradient."""
    a = x.detach().abs()
    n, k = _fifteen_digits(torch.where(a == 0, torch.ones_like(a), a))
    d = torch.full_like(a, float(decimals))
    j = k - d                                         # digits of N past the last decimal shown
    pj = _pow10(j.clamp(0, 15))
    rem = torch.fmod(n, pj)
    kept = (n - rem) / pj + (rem >= pj / 2).to(a.dtype)          # half up, on the digits shown
    kept = torch.where(j > 15, torch.zeros_like(kept), kept)       # every digit past: below half
    r = torch.where(j <= 0, _scale(n, -k), _scale(kept, -d))
    r = torch.where(a == 0, a, r)
    r = torch.where(a >= _TEXT_LIMIT, torch.full_like(r, float("nan")), r)
    return _signed(r, x, x)
