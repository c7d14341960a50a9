"""Training's error semantics (values.py): an error computed in an unchecked run is a
non-finite number, and every path that looks at values, fast or exact, reads it as an error."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xl2nn.cells import CellError
from xl2nn.functions import FUNCTIONS, binary
from xl2nn.functions.information import UnknownErrorCode
from xl2nn.functions.values import BOOL, NUM, TEXT, Val, to_objects


class _Ctx:
    device = torch.device("cpu")
    checked = False


def _val(xs: list[float], kind: int = NUM) -> Val:
    return Val(torch.tensor(xs, dtype=torch.float64).reshape(len(xs), 1, 1), kind)


def _mixed(xs: list[float]) -> Val:
    """Numbers, the last entry text: a block the exact (object) paths take."""
    kinds = np.full((len(xs) + 1, 1, 1), NUM, np.int8)
    kinds[-1] = TEXT
    text = np.empty((len(xs) + 1, 1, 1), object)
    text[-1] = "a"
    return Val(torch.tensor(xs + [math.nan], dtype=torch.float64).reshape(-1, 1, 1), kinds, text)


def test_the_exact_paths_see_an_error_not_a_number():
    objs = to_objects(_val([1.0, math.nan, math.inf])).reshape(-1)
    assert objs[0] == 1.0 and all(isinstance(o, CellError) for o in objs[1:])
    # a comparison's NaN settled into a boolean is an error, not bool(nan) = True
    assert isinstance(to_objects(_val([math.nan], BOOL)).reshape(-1)[0], CellError)
    # a comparison on the exact path (mixed kinds): the NaN entry compares as an error
    got = to_objects(binary("<", _mixed([1.0, math.nan]), _val([0.5]), _Ctx())).reshape(-1)
    assert got[0] is False and isinstance(got[1], CellError) and got[2] is False


def test_is_functions_read_a_computed_error():
    flags = lambda name, v: FUNCTIONS[name].impl([v], _Ctx()).num.reshape(-1).tolist()  # noqa: E731
    v = _val([2.0, math.nan])
    assert flags("ISERROR", v) == [0.0, 1.0] and flags("ISNUMBER", v) == [1.0, 0.0]
    assert flags("ISLOGICAL", _val([1.0, math.nan], BOOL)) == [1.0, 0.0]
    with pytest.raises(UnknownErrorCode):
        FUNCTIONS["ISNA"].impl([v], _Ctx())
    # ... also once the error has been through an exact path (its code is not kept there)
    through = FUNCTIONS["IF"].impl([_val([1.0, 1.0, 1.0]), _mixed([2.0, math.nan]), _val([0.0])], _Ctx())
    with pytest.raises(UnknownErrorCode):
        FUNCTIONS["ISNA"].impl([through], _Ctx())


def test_an_overflow_stays_an_error_through_guarded_functions():
    """1/(1E200*1E200) is #NUM! in Excel: training's inf must not become a valid 0."""
    inf = binary("*", _val([1e200, 2.0]), _val([1e200, 3.0]), _Ctx())
    got = binary("/", _val([1.0, 1.0]), inf, _Ctx()).num.reshape(-1).tolist()
    assert math.isnan(got[0]) and got[1] == 1 / 6
    exp = FUNCTIONS["EXP"].impl([binary("-", _val([0.0]), inf, _Ctx())], _Ctx()).num.reshape(-1).tolist()
    assert math.isnan(exp[0]) and exp[1] == math.exp(-6.0)      # EXP(-inf) is no 0 either


def test_a_lookup_of_an_error_or_through_one_is_an_error():
    """An error as the lookup value finds nothing (Excel: the error); an approximate search
    through a range holding a computed error has no sound position: an error, never a guess."""
    from xl2nn.functions.lookup_torch import locate
    vals = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    valid = np.ones((1, 3), bool)
    x = torch.tensor([2.5, math.inf, math.nan], dtype=torch.float64)
    for mode in (1, 0):
        got = locate(x, np.full(3, mode), np.zeros(3, np.int64), vals, valid).tolist()
        assert got == ([1, -1, -1] if mode == 1 else [-1, -1, -1])
    holed = torch.tensor([[1.0, math.nan, 3.0]], dtype=torch.float64)
    assert locate(x[:1], np.ones(1, np.int64), np.zeros(1, np.int64), holed, valid).tolist() == [-1]
    assert locate(torch.tensor([3.0], dtype=torch.float64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                  holed, valid).tolist() == [2]          # an exact match just skips it


def test_a_computed_error_meets_no_number_criterion():
    """COUNTIF(range,">0") skips an error cell; an overflow's inf must not count as > 0."""
    from xl2nn.functions.values import scalar
    r = Val(torch.tensor([[[1.0], [math.inf], [math.nan], [-2.0]]], dtype=torch.float64), NUM, is_ref=True)
    count = lambda crit: FUNCTIONS["COUNTIF"].impl([r, scalar(crit)], _Ctx()).num.item()  # noqa: E731
    assert count(">0") == 1.0 and count("<0") == 1.0 and count("<>0") == 4.0
