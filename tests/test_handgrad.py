"""verify --grad on small workbooks, recurrences that run across several columns, and which
Solver model is used when several sheets have one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xl2nn.api import load
from xl2nn.compiler.grid import recalculate

from .conftest import run_cli, solver_workbook

openpyxl = pytest.importorskip("openpyxl")

X = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
Y = [2.1, 2.9, 4.2, 4.9, 6.1, 7.0]
LR = 0.05


def sgd_sheet(path: Path, wrong: dict[str, str] | None = None) -> Path:
    """A teacher's SGD sheet: row k's b and a are row k-1's new b and a (formulas), so the
    b/new-b columns and the a/new-a columns read each other row by row."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "sgd"
    ws["B1"] = LR
    for r, (x, y) in enumerate(zip(X, Y), start=2 + 1):
        ws[f"A{r}"], ws[f"B{r}"] = x, y
        if r == 3:
            ws["C3"], ws["D3"] = 0.0, 0.0
        else:
            ws[f"C{r}"], ws[f"D{r}"] = f"=G{r - 1}", f"=H{r - 1}"
        ws[f"E{r}"] = f"=(D{r}*A{r}+C{r}-B{r})^2"                  # err²
        ws[f"F{r}"] = f"=2*(D{r}*A{r}+C{r}-B{r})"                   # de/db by hand
        ws[f"G{r}"] = f"=C{r}-$B$1*F{r}"                             # new b
        ws[f"H{r}"] = f"=D{r}-$B$1*2*(D{r}*A{r}+C{r}-B{r})*A{r}"     # new a, de/da inline
        ws[f"I{r}"] = f"=2*(D{r}*A{r}+C{r}-B{r})*A{r}"              # de/da by hand
    for cell, formula in (wrong or {}).items():
        ws[cell] = formula
    wb.save(path)
    return path


def reference_sgd() -> list[tuple[float, float, float, float]]:
    """(b, a, de/db, de/da) per row, in plain Python."""
    b = a = 0.0
    out = []
    for x, y in zip(X, Y):
        e = a * x + b - y
        out.append((b, a, 2 * e, 2 * e * x))
        b, a = b - LR * 2 * e, a - LR * 2 * e * x
    return out


main = run_cli


def test_recurrence_across_columns_is_not_circular(tmp_path):
    wb, graph = load(sgd_sheet(tmp_path / "sgd.xlsx"))
    grids = recalculate(wb, graph).grids
    for r, (b, a, db, da) in enumerate(reference_sgd(), start=3):
        assert grids.value("sgd", r, 3) == pytest.approx(b, rel=1e-12, abs=1e-15)
        assert grids.value("sgd", r, 4) == pytest.approx(a, rel=1e-12, abs=1e-15)
        assert grids.value("sgd", r, 6) == pytest.approx(db, rel=1e-12)
        assert grids.value("sgd", r, 9) == pytest.approx(da, rel=1e-12)


def test_a_real_cycle_between_columns_is_still_named(tmp_path):
    rows = [[1.0], [2.0], [3.0]]
    formulas = {f"B{r}": f"=A{r}+C{r}" for r in (1, 2, 3)} | {f"C{r}": f"=B{r}*2" for r in (1, 2, 3)}
    f = solver_workbook(tmp_path / "m.xlsx", rows, formulas | {"D1": "=SUM(C1:C3)"}, "A1:A3", "D1")
    r = subprocess.run([sys.executable, "-m", "xl2nn.cli", "inspect", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "circular reference" in r.stderr and "model!B1" in r.stderr


def test_hand_written_derivatives_pass_row_by_row(tmp_path):
    f = sgd_sheet(tmp_path / "sgd.xlsx")
    want = reference_sgd()
    for grad, wrt, k in (("F3:F8", "C3:C8", 2), ("I3:I8", "D3:D8", 3)):
        rc, out, err = main("verify", str(f), "--grad", grad, "--of", "E3:E8", "--wrt", wrt, "--json")
        assert rc == 0, out + err
        report = json.loads(out)["hand_gradients"]
        assert report["ok"] and len(report["rows"]) == 6
        assert [row["row"] for row in report["rows"]] == list(range(3, 9))
        for row, ref in zip(report["rows"], want):
            assert row["autograd"] == pytest.approx(ref[k], rel=1e-12)
        # Row k's error also depends on row k-1's b (through row k's a): said, not assumed away.
        assert report["chained"] == ["sgd!E4", "sgd!" + wrt.split(":")[0]]
        assert json.loads(out)["gradients"] is None and json.loads(out)["objective"] is None


def test_a_wrong_hand_written_derivative_names_its_row(tmp_path):
    f = sgd_sheet(tmp_path / "sgd.xlsx", wrong={"F6": "=(D6*A6+C6-B6)"})        # forgot the 2
    rc, out, _ = main("verify", str(f), "--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8")
    assert rc == 1
    assert "FAIL 1 of 6 rows differ; first: row 6: sgd!F6 recomputes to" in out
    assert "autograd d sgd!E6 / d sgd!C6 = " in out and out.rstrip().endswith("verify: FAILED")
    rc, out, _ = main("verify", str(f), "--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--json")
    report = json.loads(out)["hand_gradients"]
    assert rc == 1 and [row["row"] for row in report["rows"] if not row["ok"]] == [6]
    assert report["first_failure"]["grad_cell"] == "sgd!F6"


@pytest.mark.parametrize("flags,words", [
    (["--grad", "F3:F8", "--of", "E3:E7", "--wrt", "C3:C8"], ["same shape", "6×1", "5×1"]),
    (["--grad", "F3:F8", "--of", "E3:E8"], ["--grad, --of and --wrt go together"]),
    (["--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--loss", "E3"], ["one or the other"]),
    (["--grad", "F3:F8", "--of", "A3:A8", "--wrt", "C3:C8"], ["--of cell sgd!A3 is not a formula"]),
    (["--grad", "F3:F8", "--of", "E3:E8", "--wrt", "C3:C8", "--sheet", "nope"], ["no sheet named 'nope'"]),
    (["--grad", "F3:F8,F9", "--of", "E3:E8", "--wrt", "C3:C8"], ["must be one range"]),
])
def test_bad_grad_flags_get_one_line(tmp_path, flags, words):
    f = sgd_sheet(tmp_path / "sgd.xlsx")
    rc, out, err = main("verify", str(f), *flags)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("xl2nn: error:")
    for w in words:
        assert w in err


def _two_models(path: Path, active: int) -> Path:
    from openpyxl.workbook.defined_name import DefinedName
    wb = openpyxl.Workbook()
    wb.active.title = "notes"
    for name in ("first", "second"):
        ws = wb.create_sheet(name)
        ws["A1"], ws["A2"] = 1.0, "=(A1-3)^2"
        for key, text in (("solver_opt", f"{name}!$A$2"), ("solver_adj", f"{name}!$A$1"), ("solver_typ", "2")):
            ws.defined_names[key] = DefinedName(key, attr_text=text, hidden=True)
    wb.active = active
    wb.save(path)
    return path


def test_several_models_the_sheet_it_opens_on_decides(tmp_path):
    rc, out, err = main("inspect", str(_two_models(tmp_path / "a.xlsx", active=2)), "--json")
    assert rc == 0, err
    assert json.loads(out)["model"]["objective"] == "second!A2"
    rc, out, err = main("inspect", str(_two_models(tmp_path / "b.xlsx", active=0)))
    assert rc == 2 and out == ""
    assert "Solver models on several sheets (first, second)" in err and "--sheet NAME" in err
    assert len(err.strip().splitlines()) == 1
