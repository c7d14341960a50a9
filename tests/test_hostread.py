"""The trace guard: every way a parameter-dependent number can leave torch is refused while
tracing, and reading constants is not."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from xl2nn.compiler.hostread import HostReadGuard
from xl2nn.functions.tracing import HostRead


def _trace(fn):
    with HostReadGuard():
        return make_fx(fn)(torch.tensor([1.5, -2.5], dtype=torch.float64))


def _written(x):
    z = torch.zeros(2, dtype=torch.float64)
    z[0] = x[1]                    # an in-place write into a constant: z now depends on x
    return x + torch.from_numpy(z.numpy().copy())


@pytest.mark.parametrize("fn", [
    lambda x: x + torch.from_numpy(x.numpy().round()),
    lambda x: x + torch.tensor(x.tolist()),
    lambda x: x + torch.from_numpy(np.asarray(x.detach())),
    lambda x: x * float(x.sum()),
    lambda x: x * x.max().item(),
    lambda x: x * 2 if bool((x > 0).all()) else x,
    lambda x: x * int(x[0] > 0),
    lambda x: x if torch.equal(x, x * 1) else -x,
    _written,
    lambda x: x[x > 0].sum() + x,
    lambda x: torch.nonzero(x > 0).sum() + x,
    lambda x: torch.unique(torch.floor(x)).sum() + x,
], ids=["numpy", "tolist", "asarray", "float", "item", "bool", "int", "equal", "written", "mask", "nonzero",
        "unique"])
def test_reads_of_parameter_dependent_numbers_are_refused(fn):
    with pytest.raises(HostRead):
        _trace(fn)


def test_constants_may_be_read_and_the_trace_recomputes():
    def fn(x):
        k = torch.trunc(torch.tensor([2.7], dtype=torch.float64))        # made inside the trace
        table = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
        order = torch.from_numpy(np.argsort(table.numpy()))                # host work on a constant
        picked = table[order][table[order] > 1.5].sum()                    # masks of constants
        return x * float(k.sum()) + picked + (2 if bool((k > 2).all()) else 0)
    gm = _trace(fn)
    y = torch.tensor([0.25, 4.0], dtype=torch.float64)
    assert torch.equal(gm(y), fn(y))


def test_indexing_a_parameter_dependent_boolean_tensor_is_fine():
    """Only a mask that depends on the weights makes x[mask]'s shape move, not x itself."""
    gm = _trace(lambda x: (x > 0)[torch.tensor([1, 0])].to(torch.float64) * x)
    y = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    assert gm(y).tolist() == [-1.0, 0.0]          # (y > 0) is [F, T]; taken as [T, F], times y
