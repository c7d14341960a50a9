"""The normal distribution (Statistical): NORM.DIST, NORM.INV, NORM.S.DIST, NORM.S.INV and their
pre-2010 names NORMDIST, NORMINV, NORMSDIST, NORMSINV (one implementation each, aliased).

The cumulative distribution is torch.special.ndtr (Cephes: 0.5·erfc(-z/√2), accurate in the
tails, as LibreOffice's 0.5·erfc is), the density exp(-z²/2)/√(2π), the inverse
torch.special.ndtri (Cephes' ndtri, relative error ~1e-16 on (0, 1)), all differentiable, so
`NORM.INV(p, m, s)` in a weight-initialisation sheet and a probit in a model both train.
The exact scalar path (text, booleans, errors) calls the same torch functions on one number,
so both paths give the same bits. Excel's errors: #NUM! for a probability outside (0, 1) or
a standard deviation <= 0.
"""
from __future__ import annotations

import math

import torch

from ..cells import CellError
from .registry import Context, Elementwise, argument, excel
from .values import NUM_ERR, Val, to_bool, to_number

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _cdf(z: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(z)


def _pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _one(fn, *xs: float) -> float:
    """A torch form on plain numbers: the scalar path gives the tensor path's bits."""
    return float(fn(*(torch.tensor(x, dtype=torch.float64) for x in xs)))


def _dist(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    z = (x - m) / s
    return torch.where(c != 0, _cdf(z), _pdf(z) / s)


def _dist_scalar(x: float, m: float, s: float, c: bool) -> float | CellError:
    if s <= 0:
        return NUM_ERR
    return _one(_dist, x, m, s, float(c))


def _inv(p: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return m + s * torch.special.ndtri(p)


def _inv_scalar(p: float, m: float, s: float) -> float | CellError:
    if not 0 < p < 1 or s <= 0:
        return NUM_ERR
    return _one(_inv, p, m, s)


def _s_dist(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.where(c != 0, _cdf(z), _pdf(z))


def _s_inv_scalar(p: float) -> float | CellError:
    return _one(torch.special.ndtri, p) if 0 < p < 1 else NUM_ERR


_DIST = Elementwise(_dist, _dist_scalar, domain_error=lambda x, m, s, c: s <= 0,
                    coerce=(to_number, to_number, to_number, to_bool))
_INV = Elementwise(_inv, _inv_scalar, domain_error=lambda p, m, s: (p <= 0) | (p >= 1) | (s <= 0))
_S_DIST = Elementwise(_s_dist, lambda z, c: _one(_s_dist, z, float(c)), coerce=(to_number, to_bool))
_S_CDF = Elementwise(_cdf, lambda z: _one(_cdf, z))
_S_INV = Elementwise(torch.special.ndtri, _s_inv_scalar, domain_error=lambda p: (p <= 0) | (p >= 1))


def _numbers(args: list[Val | None], ctx: Context, n: int) -> list[Val]:
    # An argument written but left out (NORM.DIST(1,,1,TRUE)) is 0, as in the math functions.
    return [argument(args, i, ctx, omitted=0.0) for i in range(n)]


def _register(names: tuple[str, ...], fn: Elementwise, n: int) -> None:
    def impl(args: list[Val | None], ctx: Context) -> Val:
        return fn(_numbers(args, ctx, n), ctx)
    for name in names:
        excel(name, "Statistical", min_args=n, max_args=n)(impl)


_register(("NORM.DIST", "NORMDIST"), _DIST, 4)
_register(("NORM.INV", "NORMINV"), _INV, 3)
_register(("NORM.S.DIST",), _S_DIST, 2)
_register(("NORMSDIST",), _S_CDF, 1)
_register(("NORM.S.INV", "NORMSINV"), _S_INV, 1)

__all__: list[str] = []
