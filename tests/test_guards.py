"""Error guards are dropped only where no formula can catch the error (compiler/guards.py).

Each objective reads a parameter-dependent SQRT, LN or division per row. At weights where the
sheet has no error, the traced program must equal the interpreter in value and gradient; at
weights where a row errs, it must be an error (not finite) exactly where the sheet's objective
is, with finite gradients wherever the error is caught (IFERROR, ISERROR, a comparison)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from xl2nn.api import compile_workbook
from xl2nn.compiler.program import Program

from .conftest import solver_workbook

ROWS = [[1.0, 2.0], [2.0, 1.5], [3.0, 4.0], [4.0, 0.5]]

# formula per row (A: input, B: target, $D$1: the weight) -> whether its guard may go
CASES = {
    "sqrt to the loss": ("=(SQRT(A{r}*$D$1)-B{r})^2", True),
    "ln to the loss": ("=(LN(A{r}*$D$1)-B{r})^2", True),
    "rmse of a sqrt": ("=SQRT(A{r}*$D$1)", True),
    "iferror catches it": ("=(IFERROR(SQRT(A{r}*$D$1),2)-B{r})^2", False),
    "iserror tests it": ("=(IF(ISERROR(LN(A{r}*$D$1)),0,LN(A{r}*$D$1))-B{r})^2", False),
    "compared": ("=(IF(SQRT(A{r}*$D$1)>1,1,0)*$D$1-B{r})^2", False),
    "min over it": ("=(MIN(SQRT(A{r}*$D$1),5)-B{r})^2", False),
    "divided by it": ("=(1/(SQRT(A{r}*$D$1)+1)-B{r})^2", False),
    # rows 1-2 take 0 and drop an error where w < 0; rows 3-4 err where w > 0
    "an IF drops it": ("=(IF(A{r}<2.5,0,SQRT((2.5-A{r})*$D$1))-B{r})^2", False),
    # F1:F4 = SQRT((A-2.5)·w): rows 1-2 err where w > 0, and only row 3 is looked up
    "a lookup drops it": ("=(INDEX($F$1:$F$4,3)-B{r})^2", False),
}
START = {"an IF drops it": -0.7}


def _book(path: Path, row_formula: str, mean: str = "=AVERAGE(C1:C4)", start: float = 0.8) -> Path:
    formulas = {f"C{r}": row_formula.format(r=r) for r in range(1, 5)}
    formulas.update({f"F{r}": f"=SQRT((A{r}-2.5)*$D$1)" for r in range(1, 5)})
    formulas["E1"] = mean
    rows = [list(r) for r in ROWS]
    rows[0] += [None, start]                                   # D1: the weight
    return solver_workbook(path, rows, formulas, "$D$1", "$E$1")


def _guards(program: Program) -> int:
    """where and isfinite ops left in the traced program."""
    return sum(1 for n in program.full.graph.nodes
               if getattr(n.target, "__name__", "") in ("where", "isfinite"))


def _value_grad(f, w: torch.Tensor) -> tuple[float, float]:
    y = f()
    (g,) = torch.autograd.grad(y, [w], allow_unused=True)
    return float(y.detach()), float(g.reshape(())) if g is not None else 0.0


@pytest.mark.parametrize("case", CASES)
def test_a_guard_goes_only_where_nothing_can_catch_the_error(tmp_path, case):
    row, droppable = CASES[case]
    c = compile_workbook(_book(tmp_path / "g.xlsx", row, start=START.get(case, 0.8)))
    program = Program(c.model)
    assert program.mode == "traced", program.fallback
    if droppable:
        assert _guards(program) == 0, program.full.code
    else:
        assert _guards(program) > 0, program.full.code
    (w,) = c.model.weights.values()
    for value in (0.8, 2.5, 0.0, -0.7):                        # -0.7: every row's SQRT/LN errs
        with torch.no_grad():
            w.fill_(value)
        want, grad_want = _value_grad(c.model.forward, w)
        got, grad_got = _value_grad(program.forward, w)
        where = f"{case} at w = {value}"
        if not math.isfinite(want):                             # the sheet's objective is an error
            assert not math.isfinite(got), where
            continue
        assert got == pytest.approx(want, rel=1e-13, abs=1e-300), where
        if math.isfinite(grad_want):                            # (not SQRT's slope at 0)
            assert math.isfinite(grad_got), where              # caught errors leave no NaN behind
            assert grad_got == pytest.approx(grad_want, rel=1e-10, abs=1e-300), where


def test_an_objective_that_errs_is_refused_by_train_and_equal_in_check(tmp_path):
    """With its guard gone, SQRT of a negative mean is NaN (or inf) in the program, an error
    as in the interpreter; check() counts both alike."""
    c = compile_workbook(_book(tmp_path / "g.xlsx", "=(A{r}*$D$1-B{r})^2", "=SQRT(AVERAGE(C1:C4))"))
    program = Program(c.model)
    assert _guards(program) == 0, program.full.code
    assert program.check() <= 1e-13
    (w,) = c.model.weights.values()
    with torch.no_grad():
        w.fill_(1e200)                                          # (A·w - B)^2 overflows: #NUM! in Excel
        assert not math.isfinite(float(c.model()))
        assert not math.isfinite(float(program()))
