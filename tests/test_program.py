"""The traced program that training runs: the same numbers and gradients as the interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xl2nn.api import compile_workbook
from xl2nn.compiler.lower import _viewer
from xl2nn.compiler.program import Program

from .conftest import solver_workbook

ROWS = 40


def _mlp_workbook(path):
    """x1, x2 -> MMULT hidden layer (CSE array) -> two ReLU spellings -> tanh unit -> SUMSQ."""
    from openpyxl import load_workbook
    from openpyxl.worksheet.formula import ArrayFormula
    rng = np.random.default_rng(7)
    rows = [["x1", "x2", "ones", "y"]]
    for _ in range(ROWS):
        x1, x2 = rng.normal(size=2)
        rows.append([float(x1), float(x2), 1.0, float(np.sin(x1) + 0.5 * x2 > 0)])
    # weights: H2:I4 (3x2 hidden), K2:K3 (output), K4 bias
    w = rng.uniform(-0.5, 0.5, size=(3, 2))
    for r in range(3):
        rows[r + 1] += [None, None, None, float(w[r, 0]), float(w[r, 1])]
    rows[1] += [None, 0.3]
    rows[2] += [None, -0.2]
    rows[3] += [None, 0.1]
    formulas = {}
    for r in range(2, ROWS + 2):
        formulas[f"O{r}"] = f"=IF(M{r}<0,0,M{r})"
        formulas[f"P{r}"] = f"=IF(N{r}>0,N{r},0)"
        formulas[f"Q{r}"] = f"=TANH(O{r}*$K$2+P{r}*$K$3+$K$4)"
        formulas[f"R{r}"] = f"=Q{r}-D{r}"
    formulas["T1"] = f"=SUMSQ(R2:R{ROWS + 1})"
    solver_workbook(path, rows, formulas, params="$H$2:$I$4,$K$2:$K$4", objective="$T$1")
    wb = load_workbook(path)
    ws = wb["model"]
    ws["M2"] = ArrayFormula(f"M2:N{ROWS + 1}", f"=MMULT(A2:C{ROWS + 1},H2:I4)")
    wb.save(path)
    return path


@pytest.fixture
def mlp(tmp_path):
    return compile_workbook(_mlp_workbook(tmp_path / "mlp.xlsx"))


def _grads(model, run):
    model.zero_grad()
    run().backward()
    return {k: p.grad.detach().clone() for k, p in model.weights.items()}


def test_trace_matches_interpreter_values_and_gradients(mlp):
    model = mlp.model
    program = Program(model)
    assert program.fallback == ""
    want, got = float(model()), float(program())
    assert got == pytest.approx(want, rel=1e-13)
    g_int, g_prog = _grads(model, model), _grads(model, program)
    for name in g_int:
        torch.testing.assert_close(g_prog[name], g_int[name], rtol=1e-12, atol=1e-15)
    # ...and away from the workbook's weights, where other ReLUs are active.
    with torch.no_grad():
        for p in model.weights.values():
            p.mul_(-1.7)
    assert program.check() <= 1e-12


def test_batch_estimate_matches_interpreter(mlp):
    model = mlp.model
    program = Program(model)
    assert model.row_count == ROWS
    index = torch.tensor([3, 0, 17, 39, 8])
    # SUMSQ over rows: the batch's sum scaled by rows / batch, an unbiased estimate.
    model()
    terms = torch.stack([model.value(f"R{r + 2}") for r in index.tolist()])
    expected = float((terms ** 2).sum()) * ROWS / len(index)
    assert float(program.batch(index)) == pytest.approx(expected, rel=1e-12)
    assert float(model.batch_objective(index)) == pytest.approx(expected, rel=1e-12)
    g_int = _grads(model, lambda: model.batch_objective(index))
    g_prog = _grads(model, lambda: program.batch(index))
    for name in g_int:
        torch.testing.assert_close(g_prog[name], g_int[name], rtol=1e-12, atol=1e-15)


def test_batch_refused_when_objective_is_not_a_row_mean(tmp_path):
    path = solver_workbook(tmp_path / "m.xlsx", [[1.0, 2.0], [3.0, 0.5]],
                           {"D1": "=SUM(A1:A2)*B1+B2^2"}, params="$B$1:$B$2", objective="$D$1")
    c = compile_workbook(path)
    assert c.model.row_count == 0
    from xl2nn.errors import BadInput
    with pytest.raises(BadInput, match=r"mean or sum over rows.*model!D1 is =SUM\(A1:A2\)\*B1\+B2\^2"):
        Program(c.model).batch(torch.tensor([0]))


# What a person would write for each lesson sheet in PyTorch, and what the rewrites reach.
HAND_WRITTEN = {
    "linear": ["view", "mm", "mse_loss"],                  # F.mse_loss(x @ w.view(10, 1), y)
    "nnet": ["t", "mm", "relu", "sum", "mse_loss"],       # F.mse_loss(relu(x @ w.t()).sum(1), y)
    "mmult": ["mm", "relu", "sum", "mse_loss"],
}


SAMPLE = Path(__file__).resolve().parents[1] / "sample_workbooks" / "titanic.xlsx"


@pytest.mark.parametrize("which", ["reference", "sample"])
def test_titanic_programs_are_the_hand_written_network(which, request):
    """The user's workbook and ours (structured references, units computed in another order)."""
    book = request.getfixturevalue("reference") if which == "reference" else SAMPLE
    for sheet, ops in HAND_WRITTEN.items():
        c = compile_workbook(book, sheet=sheet)
        program = Program(c.model)
        assert program.fallback == ""
        assert program.check() <= 1e-13
        got = [getattr(n.target, "__name__", n.target) for n in program.full.graph.nodes
               if n.op in ("call_function", "call_method")]
        assert got == ops, program.full.code
        # At Solver's optimum the gradients are ~1e-8 and sums of cancelling terms: compare
        # them absolutely, then at perturbed weights relatively.
        g_int, g_prog = _grads(c.model, c.model), _grads(c.model, program)
        for name in g_int:
            torch.testing.assert_close(g_prog[name], g_int[name], rtol=0, atol=1e-15)
        with torch.no_grad():
            for p in c.model.weights.values():
                p.add_(torch.linspace(-0.2, 0.3, p.numel(), dtype=p.dtype).view(p.shape))
        g_int, g_prog = _grads(c.model, c.model), _grads(c.model, program)
        for name in g_int:
            assert g_int[name].abs().max() > 1e-3
            torch.testing.assert_close(g_prog[name], g_int[name], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("size,stride,offset,n", [
    ((712, 1, 1), (1, 0, 0), 0, 712),          # a column read by the next column
    ((1, 1, 10), (0, 0, 1), 10, 20),           # a parameter row inside a 2x10 block
    ((712, 1, 1), (2, 0, 0), 1, 1424),         # one column of a 712x2 array
    ((5, 3, 1), (1, 0, 0), 2, 10),             # a column broadcast across 3
    ((4, 2, 3), (0, 5, 1), 1, 12),             # a 2x3 block of a 2-row, 5-wide grid
    ((3, 2, 2), (1, 2, 1), 0, 6),              # overlapping windows: as_strided fallback
])
def test_views_equal_as_strided(size, stride, offset, n):
    base = torch.randn(n, dtype=torch.float64)
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    got = _viewer(size, stride, offset, n)(a)
    want = b.as_strided(size, stride, offset)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    w = torch.randn(size, dtype=torch.float64)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-15, atol=1e-15)
