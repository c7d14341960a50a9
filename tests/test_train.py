"""xl2nn train: gradient descent on the compiled model, written back into a copy of the workbook."""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from xl2nn import cli
from xl2nn.api import compile_workbook
from .libreoffice import find_soffice, recalculate_many
from xl2nn.ooxml import sheet_parts
from xl2nn.progress import Progress
from xl2nn.reader import read_workbook
from xl2nn.verify import check_gradients

from .conftest import REFERENCE, sha256, solver_workbook

openpyxl = pytest.importorskip("openpyxl")

OBJECTIVES = {"linear": (7, 27), "nnet": (1, 34), "mmult": (1, 27)}     # AA7, AH1, AA1
SOLVER_LOSS = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xl2nn.cli", *args], capture_output=True, text=True)


@functools.lru_cache(maxsize=8)
def read(path: Path):
    """Read a workbook once per test session (the outputs are never modified)."""
    return read_workbook(path)


def trace_table(path: Path, name: str = "sgd_steps") -> tuple[list[str], np.ndarray]:
    """The trace sheet's header and its rows as floats (empty cells as NaN)."""
    sheet = read(path).sheets[name]
    header = [sheet.values[(1, c)] for c in range(1, sheet.max_col + 1)]
    table = np.array([[float(sheet.values.get((r, c), np.nan)) for c in range(1, sheet.max_col + 1)]
                      for r in range(2, sheet.max_row + 1)])
    return header, table


def run_in_process(*args: str) -> tuple[int, str, str]:
    """cli.main without a new interpreter (importing torch costs seconds on this machine)."""
    out, err = io.StringIO(), io.StringIO()
    before = sha256(Path(args[1]))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(args))
    assert sha256(Path(args[1])) == before        # the input is never written
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- the reference workbook

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """The issue's acceptance command on each titanic sheet: random init, seed 0, 1000 steps, lr 0.1."""
    if not REFERENCE.exists():
        pytest.skip("../shared/reference/titanic.xlsx is not present beside the project")
    folder = tmp_path_factory.mktemp("trained")
    before = sha256(REFERENCE)
    out = {}
    for sheet in OBJECTIVES:
        dst = folder / f"{sheet}.xlsx"
        rc, stdout, stderr = run_in_process("train", str(REFERENCE), "--sheet", sheet, "--init", "random",
                                            "--seed", "0", "--steps", "1000", "--lr", "0.1", "-o", str(dst),
                                            "--json")
        assert rc == 0, stderr
        assert stderr == ""                         # no warnings, and no progress bar off a terminal
        out[sheet] = (json.loads(stdout), dst)
        assert sha256(REFERENCE) == before          # the input is never written
    return out


@pytest.mark.parametrize("sheet", sorted(OBJECTIVES))
def test_sgd_from_random_init_reaches_solvers_loss(trained, sheet):
    info, _ = trained[sheet]
    assert info["objective"] == f"{sheet}!" + {"linear": "AA7", "nnet": "AH1", "mmult": "AA1"}[sheet]
    assert (info["steps"], info["lr"], info["optimizer"], info["init"], info["seed"]) == (1000, 0.1, "sgd", "random", 0)
    assert info["start_loss"] > 0.5                  # random weights are far from the optimum
    assert info["final_loss"] <= 0.15
    assert info["final_loss"] <= SOLVER_LOSS[sheet] * 1.005   # within 0.5% of Excel's Solver, or better
    assert info["trace_rows"] == 1001 and info["log_every"] == 1 and info["trace_sheet"] == "sgd_steps"


@pytest.mark.parametrize("sheet", sorted(OBJECTIVES))
def test_output_holds_trained_weights_and_recalculated_cells(trained, sheet):
    info, path = trained[sheet]
    ours, theirs = read(path), read(REFERENCE)
    objective = ours.sheets[sheet].values[OBJECTIVES[sheet]]
    assert objective == pytest.approx(info["final_loss"], rel=1e-9)
    # the parameter cells hold the final weights (the trace's last row)
    header, table = trace_table(path)
    for j, head in enumerate(header[2::3]):
        cell = head.split()[0]
        assert cell.startswith(f"{sheet}!")
        row, col = _rc(cell.split("!")[1])
        assert ours.sheets[sheet].values[(row, col)] == table[-1, 2 + 3 * j]
    # formulas, Solver's names and the other sheets are unchanged
    for name, s in theirs.sheets.items():
        assert ours.sheets[name].formulas == s.formulas
        if name == sheet:
            continue
        for pos, want in s.values.items():
            got = ours.sheets[name].values.get(pos)
            if isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
            else:
                assert got == want
    assert {(n.name, n.text) for n in theirs.names} <= {(n.name, n.text) for n in ours.names}
    with zipfile.ZipFile(path) as zf:
        assert b'fullCalcOnLoad="1"' in zf.read("xl/workbook.xml")
    assert list(ours.sheets) == list(theirs.sheets) + ["sgd_steps"]


def test_libreoffice_recalculation_agrees(trained, tmp_path):
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    pairs = [(path, tmp_path / f"{sheet}.lo.xlsx") for sheet, (_, path) in trained.items()]
    recalculate_many(pairs)
    for (sheet, (info, _)), (_, lo) in zip(trained.items(), pairs):
        got = read(lo).sheets[sheet].values[OBJECTIVES[sheet]]
        assert got == pytest.approx(info["final_loss"], rel=1e-9), sheet


def test_trace_sheet_is_the_sgd_table(trained):
    info, path = trained["nnet"]
    header, t = trace_table(path)
    assert header[:8] == ["step", "loss", "nnet!R4 SibSp", "dL/d nnet!R4", "update nnet!R4",
                          "nnet!S4 Parch", "dL/d nnet!S4", "update nnet!S4"]
    assert len(header) == 2 + 3 * 20 and t.shape == (1001, 62)
    assert np.array_equal(t[:, 0], np.arange(1001))
    assert t[0, 1] == info["start_loss"] and t[-1, 1] == info["final_loss"]
    w, g, u = t[:, 2::3], t[:, 3::3], t[:, 4::3]
    assert np.array_equal(u[:-1], w[1:] - w[:-1])             # update = w_{k+1} - w_k
    np.testing.assert_allclose(u[:-1], -0.1 * g[:-1], rtol=1e-12, atol=1e-15)   # plain SGD, up to rounding of w_{k+1} - w_k
    assert np.isnan(u[-1]).all()                               # the final row has no update ...
    assert np.isfinite(g[-1]).all() and np.abs(g[-1]).max() < 1e-2   # ... but its gradient
    assert t[-1, 1] < t[100, 1] < t[10, 1] < t[0, 1]
    assert read(path).sheets["sgd_steps"].values.get((1002, 5)) is None   # the cell is there, empty
    with zipfile.ZipFile(path) as zf:
        part = next(p.path for p in sheet_parts(zf, str(path)) if p.name == "sgd_steps")
        assert 'topLeftCell="A2" activePane="bottomLeft" state="frozen"' in zf.read(part).decode()  # header frozen
        charts = [n for n in zf.namelist() if n.startswith("xl/charts/chart")]
        assert len(charts) == 1
        xml = zf.read(charts[0]).decode()
    assert "<c:lineChart>" in xml and "'sgd_steps'!$B$2:$B$1002" in xml


def test_trace_first_row_gradient_is_verifys_autograd(trained):
    """Row 0 holds w_0 (the random draw) and dL/dw there; verify's autograd at w_0 agrees."""
    _, path = trained["nnet"]
    header, t = trace_table(path)
    c = compile_workbook(REFERENCE, sheet="nnet")
    with torch.no_grad():
        c.model.weights["nnet_R4_AA5"].copy_(torch.tensor(t[0, 2::3].reshape(2, 10)))
    report = check_gradients(c.model, points=1)
    assert report.ok and report.objective == pytest.approx(t[0, 1], rel=1e-12)
    assert [chk.cell for chk in report.checks] == [h.split()[1] for h in header[3::3]]
    np.testing.assert_allclose(t[0, 3::3], [chk.autograd for chk in report.checks], rtol=1e-12)
    assert np.abs(t[0, 3::3]).max() > 0.1


def test_trace_from_the_workbook_weights(reference, tmp_path):
    """Default init: step 0 is Excel's own state, its loss Excel's cached objective."""
    out = tmp_path / "short.xlsx"
    rc, _, err = run_in_process("train", str(reference), "--sheet", "nnet", "--steps", "3", "-o", str(out))
    assert rc == 0, err
    header, t = trace_table(out)
    assert t.shape == (4, 62) and t[0, 1] == pytest.approx(SOLVER_LOSS["nnet"], rel=1e-12)
    report = check_gradients(compile_workbook(reference, sheet="nnet").model, points=1)
    np.testing.assert_allclose(t[0, 3::3], [chk.autograd for chk in report.checks], rtol=1e-9)
    assert np.abs(t[0, 3::3]).max() < 1e-5          # Solver's optimum


def _rc(a1: str) -> tuple[int, int]:
    from xl2nn.cells import parse_a1
    return parse_a1(a1)


# --------------------------------------------------------------------------- small workbooks

X = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
Y = [1.1, 1.9, 3.2, 3.9, 5.1, 6.0, 6.8, 8.1, 9.0, 9.9]


def regression(path: Path, objective: str = "=AVERAGE(C2:C11)", extra: dict[str, str] | None = None) -> Path:
    """y ≈ a·x + b with a, b in E2:E3 (starting at 0.5, 0) and the mean squared error in E5."""
    rows = [["x", "y", "err", None, None]] + [[x, y, None, None, None] for x, y in zip(X, Y)]
    rows[1][4], rows[2][4] = 0.5, 0.0
    formulas = {f"C{r}": f"=($E$2*A{r}+$E$3-B{r})^2" for r in range(2, 12)}
    formulas["E5"] = objective
    formulas.update(extra or {})
    return solver_workbook(path, rows, formulas, params="$E$2:$E$3", objective="$E$5")


def mse(w: np.ndarray) -> float:
    return float(np.mean((w[0] * np.array(X) + w[1] - np.array(Y)) ** 2))


def main(capsys, *args: str) -> tuple[int, str, str]:
    """`xl2nn train FILE ...` in process; the input's bytes are checked to be unchanged."""
    before = sha256(Path(args[1]))
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    assert sha256(Path(args[1])) == before
    return rc, out, err


def test_summary_and_default_output(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    before = sha256(src)
    rc, out, err = main(capsys, "train", str(src), "--steps", "300", "--lr", "0.05")
    assert rc == 0, err
    dst = tmp_path / "fit.trained.xlsx"                    # beside the input, same suffix
    assert dst.exists() and sha256(src) == before
    assert "loss      " in out and "300 steps" in out and "cpu float64" in out and str(dst) in out
    first, last = [float(v) for v in out.split("loss")[1].split("\n")[0].split("→")]
    assert first == pytest.approx(mse(np.array([0.5, 0.0])), rel=1e-9)
    w = [read_workbook(dst).sheets["model"].values[(r, 5)] for r in (2, 3)]
    assert last == pytest.approx(mse(np.array(w)), rel=1e-9)      # printed to 10 digits
    # least squares by numpy: 300 SGD steps get close
    a, b = np.polyfit(X, Y, 1)
    assert last < mse(np.array([a, b])) * 1.05
    assert read_workbook(dst).sheets["model"].values[(5, 5)] == pytest.approx(mse(np.array(w)), rel=1e-12)
    assert cli.default_output(Path("d/book.xlsm")) == Path("d/book.trained.xlsm")


def test_batches_and_epochs(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    dst = tmp_path / "out.xlsx"
    rc, out, err = main(capsys, "train", str(src), "--batch-size", "4", "--epochs", "3", "--lr", "0.05",
                        "--seed", "7", "-o", str(dst), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert (info["steps"], info["epochs"], info["batch_size"], info["rows"]) == (9, 3, 4, 10)   # ceil(10/4) a pass
    header, t = trace_table(dst)
    assert header == ["step", "loss", "model!E2", "dL/d model!E2", "update model!E2",
                      "model!E3", "dL/d model!E3", "update model!E3"]
    assert t.shape == (10, 8)
    # the loss column is the sheet's full objective at w_k, not the batch's
    for row in t:
        assert row[1] == pytest.approx(mse(row[[2, 5]]), rel=1e-12)
    # the gradients of steps 0..8 are batch gradients: -lr·g is the update, g is not the full gradient
    np.testing.assert_allclose(t[:-1, [4, 7]], -0.05 * t[:-1, [3, 6]], rtol=1e-12)
    x, y = np.array(X), np.array(Y)

    def full_grad(w):
        r = w[0] * x + w[1] - y
        return np.array([np.mean(2 * r * x), np.mean(2 * r)])
    assert not np.allclose(t[0, [3, 6]], full_grad(t[0, [2, 5]]))
    np.testing.assert_allclose(t[-1, [3, 6]], full_grad(t[-1, [2, 5]]), rtol=1e-12)   # the final row: full
    assert info["final_loss"] < info["start_loss"]
    # the same seed samples the same batches
    dst2 = tmp_path / "again.xlsx"
    assert main(capsys, "train", str(src), "--batch-size", "4", "--epochs", "3", "--lr", "0.05",
                "--seed", "7", "-o", str(dst2))[0] == 0
    assert np.array_equal(trace_table(dst2)[1], t, equal_nan=True)


def test_maximise_and_reach_a_value(tmp_path, capsys):
    from openpyxl.workbook.defined_name import DefinedName
    # 0-(x-3)^2, not -(x-3)^2: in Excel unary minus binds tighter than ^
    up = solver_workbook(tmp_path / "max.xlsx", [[0.0]], {"B1": "=0-(A1-3)^2"}, "$A$1", "$B$1", sense=1)
    rc, out, err = main(capsys, "train", str(up), "--steps", "200", "--lr", "0.1", "-o", str(tmp_path / "o1.xlsx"),
                        "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["sense"] == "max" and info["start_loss"] == -9.0 and info["final_loss"] == pytest.approx(0, abs=1e-12)
    assert read_workbook(tmp_path / "o1.xlsx").sheets["model"].values[(1, 1)] == pytest.approx(3.0, abs=1e-6)

    val = solver_workbook(tmp_path / "value.xlsx", [[1.0]], {"B1": "=A1*A1"}, "$A$1", "$B$1", sense=3)
    wb = openpyxl.load_workbook(val)
    wb["model"].defined_names["solver_val"] = DefinedName("solver_val", attr_text="4", hidden=True)
    wb.save(val)
    rc, out, err = main(capsys, "train", str(val), "--steps", "200", "--lr", "0.01", "-o",
                        str(tmp_path / "o2.xlsx"), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert (info["sense"], info["target"]) == ("value", 4.0)
    assert info["final_loss"] == pytest.approx(4.0, rel=1e-9)     # minimises (A1² - 4)²: A1 → 2
    assert read_workbook(tmp_path / "o2.xlsx").sheets["model"].values[(1, 1)] == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_other_optimizers(tmp_path, capsys, optimizer):
    src = regression(tmp_path / "fit.xlsx")
    rc, out, err = main(capsys, "train", str(src), "--optimizer", optimizer, "--steps", "500", "--lr", "0.05",
                        "-o", str(tmp_path / "o.xlsx"), "--json")
    assert rc == 0, err
    a, b = np.polyfit(X, Y, 1)
    assert json.loads(out)["final_loss"] == pytest.approx(mse(np.array([a, b])), rel=1e-5)


def test_log_every_and_a_free_sheet_name(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    wb = openpyxl.load_workbook(src)
    wb.create_sheet("SGD_steps")
    wb.save(src)
    dst = tmp_path / "o.xlsx"
    rc, out, err = main(capsys, "train", str(src), "--steps", "25", "--log-every", "10", "-o", str(dst), "--json")
    assert rc == 0, err
    assert json.loads(out)["trace_sheet"] == "sgd_steps_2"
    _, t = trace_table(dst, "sgd_steps_2")
    assert t[:, 0].tolist() == [0, 10, 20, 25]
    assert np.isnan(t[-1, [4, 7]]).all() and np.isfinite(t[:-1, [4, 7]]).all()
    # default --log-every keeps the trace near 1,000 rows
    rc, out, _ = main(capsys, "train", str(src), "--steps", "2500", "--lr", "0.01", "-o", str(dst), "--json")
    info = json.loads(out)
    assert (info["log_every"], info["trace_rows"]) == (3, 835)      # 0, 3, ..., 2499, and 2500


def test_cells_with_unsupported_functions_are_named(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx", extra={"G2": "=BESSELJ(E2,1)", "G3": "=BESSELJ(A2,1)", "H2": "=G2+1"})
    rc, out, err = main(capsys, "train", str(src), "--steps", "5", "-o", str(tmp_path / "o.xlsx"))
    assert rc == 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("xl2nn: warning: ")
    assert "model!G2 (unsupported BESSELJ)" in err and "G3" not in err      # G3 does not depend on E2:E3
    assert "computed from them are stale too: model!H2" in err
    out = read_workbook(tmp_path / "o.xlsx").sheets["model"]
    assert out.values.get((2, 7)) is None and out.formulas[(2, 7)].text == "BESSELJ(E2,1)"   # kept as it was


def test_float32(tmp_path, capsys):
    """--dtype float32 trains the traced program in float32; the final loss is reported in float64."""
    src = regression(tmp_path / "fit.xlsx")
    dst = tmp_path / "o.xlsx"
    rc, out, err = main(capsys, "train", str(src), "--steps", "300", "--lr", "0.05", "--dtype", "float32",
                        "-o", str(dst), "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["dtype"] == "float32"
    w = [read_workbook(dst).sheets["model"].values[(r, 5)] for r in (2, 3)]
    assert info["final_loss"] == pytest.approx(mse(np.array(w)), rel=1e-12)   # reported in float64
    # float32 steps end near the float64 run's weights (same start, same lr)
    rc, out64, err = main(capsys, "train", str(src), "--steps", "300", "--lr", "0.05",
                          "-o", str(tmp_path / "o64.xlsx"), "--json")
    assert rc == 0, err
    assert info["final_loss"] == pytest.approx(json.loads(out64)["final_loss"], rel=1e-4)
    assert info["final_loss"] < info["start_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    losses = {}
    for dev in ("cpu", "cuda"):
        rc, out, err = main(capsys, "train", str(src), "--init", "random", "--seed", "3", "--steps", "200",
                            "--device", dev, "-o", str(tmp_path / f"{dev}.xlsx"), "--json")
        assert rc == 0, err
        info = json.loads(out)
        assert info["device"].startswith(dev)
        losses[dev] = info["start_loss"], info["final_loss"]
    assert losses["cpu"][0] == losses["cuda"][0]                     # the same random start
    assert losses["cuda"][1] == pytest.approx(losses["cpu"][1], rel=1e-9)


# --------------------------------------------------------------------------- bad input

def _one_line_error(rc: int, err: str) -> str:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xl2nn: error: ")
    return lines[0]


def test_divergence_names_the_step(tmp_path, capsys):
    # maximise EXP(A1) from 1 with lr 1: A1 = 1, 1+e, 44.9, 3.2e19 -> EXP overflows at step 3
    src = solver_workbook(tmp_path / "exp.xlsx", [[1.0]], {"B1": "=EXP(A1)"}, "$A$1", "$B$1", sense=1)
    before = sha256(src)
    r = run_cli("train", str(src), "--lr", "1", "-o", str(tmp_path / "o.xlsx"))     # a real process
    line = _one_line_error(r.returncode, r.stderr)
    # EXP past Excel's range is #NUM!: NaN while training, and the sheet names it
    assert "diverged" in line and "at step 3 " in line and "nan" in line
    assert "the sheet gives #NUM! there, from model!B1 (=EXP(A1))" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.xlsx"] and sha256(src) == before


def test_a_too_large_learning_rate_names_the_first_bad_step(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    rc, out, err = main(capsys, "train", str(src), "--lr", "3", "--steps", "1000", "-o", str(tmp_path / "o.xlsx"))
    line = _one_line_error(rc, err)
    # the same iteration in NumPy: the first step whose loss is not finite
    x, y, w = np.array(X), np.array(Y), np.array([0.5, 0.0])
    with np.errstate(all="ignore"):
        for k in range(1000):
            r = w[0] * x + w[1] - y
            if not math.isfinite(np.mean(r * r)):
                break
            w = w - 3 * np.array([np.mean(2 * r * x), np.mean(2 * r)])
    assert 50 < k < 1000 and f"at step {k} " in line
    assert not (tmp_path / "o.xlsx").exists()


def test_batches_need_a_mean_or_sum_over_rows(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx", objective="=AVERAGE(C2:C11)+0")
    rc, out, err = main(capsys, "train", str(src), "--batch-size", "4", "-o", str(tmp_path / "o.xlsx"))
    line = _one_line_error(rc, err)
    assert "--batch-size" in line and "E5" in line
    assert not (tmp_path / "o.xlsx").exists()


def test_output_in_a_missing_folder(tmp_path, capsys):
    src = regression(tmp_path / "fit.xlsx")
    rc, out, err = main(capsys, "train", str(src), "-o", str(tmp_path / "nope" / "o.xlsx"))
    line = _one_line_error(rc, err)
    assert "does not exist" in line and "nope" in line
    rc, out, err = main(capsys, "train", str(src), "-o", str(src))
    assert "not the input" in _one_line_error(rc, err)
    rc, out, err = main(capsys, "train", str(src), "-o", str(tmp_path / "o.xlsm"))
    assert "suffix" in _one_line_error(rc, err)
    rc, out, err = main(capsys, "train", str(src), "--steps", "-1", "-o", str(tmp_path / "o.xlsx"))
    assert "--steps" in _one_line_error(rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.xlsx"]


def test_ctrl_c_during_training_leaves_nothing(tmp_path, capsys, monkeypatch):
    src = regression(tmp_path / "fit.xlsx")
    before = sha256(src)

    def interrupt(self, step, loss=None):
        if step == 50:
            raise KeyboardInterrupt
    monkeypatch.setattr(Progress, "update", interrupt)
    rc, out, err = main(capsys, "train", str(src), "--steps", "1000", "-o", str(tmp_path / "o.xlsx"))
    assert rc == 130 and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.xlsx"] and sha256(src) == before


def test_ctrl_c_while_writing_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    from xl2nn.writer import xlsx_patch
    src = regression(tmp_path / "fit.xlsx")

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(xlsx_patch, "_write_package", interrupt)
    rc, out, err = main(capsys, "train", str(src), "--steps", "10", "-o", str(tmp_path / "o.xlsx"))
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.xlsx"]


# --------------------------------------------------------------------------- the progress bar

class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(stream=stream, interval=0.0)
        bar.start(10)
        for k in range(1, 11):
            bar.update(k, lambda k=k: 1.0 / k)
        bar.close()
    assert pipe.getvalue() == ""
    text = tty.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "10/10" in last and "loss 0.1 " in last and "steps/s" in last and "#" * 24 in last


def test_small_models_train_on_one_thread_and_restore_the_count(tmp_path, monkeypatch):
    """A titanic-sized model trains on one CPU thread (spinning workers cost 3-40x on a busy
    machine); torch's own setting is restored afterwards."""
    from xl2nn.api import compile_workbook
    from xl2nn.train import TrainOptions, train
    c = compile_workbook(regression(tmp_path / "fit.xlsx"))
    seen = []
    real = torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append(torch.get_num_threads())
        return real(self, *a, **k)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    before = torch.get_num_threads()
    train(c.model, TrainOptions(steps=3, lr=0.05))
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == before


def test_compile_trains_the_same_model(tmp_path):
    """--compile runs the traced program through torch.compile: the same steps, to float64
    rounding (inductor may fuse and reorder the arithmetic)."""
    book = Path(__file__).resolve().parents[1] / "sample_workbooks" / "linear_regression.xlsx"
    runs = {}
    for flag in ([], ["--compile"]):
        r = run_cli("train", str(book), "--steps", "20", "-o", str(tmp_path / f"o{len(flag)}.xlsx"), "--json", *flag)
        assert r.returncode == 0, r.stderr
        assert "warning" not in r.stderr, r.stderr
        runs[bool(flag)] = json.loads(r.stdout)
    assert runs[True]["final_loss"] == pytest.approx(runs[False]["final_loss"], rel=1e-10)
    assert runs[True]["final_loss"] < runs[True]["start_loss"]


def test_non_differentiable_functions_give_zero_gradient_and_inspect_says_so(tmp_path):
    """ROUND of a parameter is flat almost everywhere: autograd gives 0 for C1 (as the finite
    difference does), C2 still trains, and inspect names ROUND and its cells."""
    rows = [[1.0, 2.0, 0.7], [2.0, 3.5, 0.3], [3.0, 5.0, None]]
    f = {f"D{r}": f"=(ROUND(A{r}*$C$1,0)-B{r})^2+($C$2*A{r}-B{r})^2" for r in (1, 2, 3)}
    f["E1"] = "=SUM(D1:D3)"
    src = solver_workbook(tmp_path / "round.xlsx", rows, f, "$C$1:$C$2", "$E$1")
    c = compile_workbook(src)
    c.model().backward()
    g = c.model.weights["model_C1_C2"].grad
    assert g is not None and float(g[0, 0]) == 0.0
    want = sum(2 * (0.3 * a - b) * a for a, b in ((1, 2), (2, 3.5), (3, 5)))
    assert float(g[1, 0]) == pytest.approx(want, rel=1e-12)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["inspect", str(src), "--json"]) == 0
    assert json.loads(out.getvalue())["not_differentiable"] == {"ROUND": ["model!D1:D3"]}
