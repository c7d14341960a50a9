"""The user's own workbook, saved by Excel: its cached values are the ground truth."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from xl2nn.api import compile_workbook, load
from xl2nn.compiler.grid import recalculate
from xl2nn.reader import read_workbook
from xl2nn.verify import check_gradients, check_values
from xl2nn.writer import patch_workbook

from .conftest import sha256

EXCEL_OBJECTIVES = {
    "linear": ("AA7", 0.14422714930851466),
    "nnet": ("AH1", 0.14315209641714463),
    "mmult": ("AA1", 0.14315209641014892),
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xl2nn.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("sheet", sorted(EXCEL_OBJECTIVES))
def test_compiled_objective_equals_excel(reference, sheet):
    cell, excel = EXCEL_OBJECTIVES[sheet]
    c = compile_workbook(reference, sheet=sheet)
    assert c.spec.objective_name == f"{sheet}!{cell}"
    got = float(c.model().detach())
    assert abs(got - excel) <= 1e-12 * excel


def test_families_not_cells(reference):
    """nnet has ~9,000 formula cells; the model is a handful of families."""
    c = compile_workbook(reference, sheet="nnet")
    assert [f.size for f in c.model.op_families] == [712, 712, 712, 712, 712, 712, 1]
    assert c.model.weights["nnet_R4_AA5"].shape == (2, 10)
    # Intermediate cells can be read back after a forward: Excel's own cached ReLU values.
    wb = c.workbook
    c.model()
    for r in (4, 5, 400, 715):
        assert float(c.model.value(f"AE{r}")) == pytest.approx(wb.sheets["nnet"].values[(r, 31)], rel=1e-12)


def test_every_numeric_formula_cell_matches_excel(reference):
    wb, graph = load(reference)
    recalc = recalculate(wb, graph)
    assert not recalc.skipped
    sheets = {s.sheet: s for s in check_values(wb, recalc)}
    assert sheets["nnet"].checked > 9000 and sheets["mmult"].checked > 9000
    for s in sheets.values():
        assert s.ok, s
        assert s.max_rel < 1e-9


def test_eval_writes_recomputed_cached_values(reference, tmp_path):
    before = sha256(reference)
    out = tmp_path / "recalculated.xlsx"
    r = run("eval", str(reference), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sha256(reference) == before
    ours, theirs = read_workbook(out), read_workbook(reference)
    n = 0
    for name, sheet in theirs.sheets.items():
        assert ours.sheets[name].formulas.keys() == sheet.formulas.keys()   # formulas kept
        for pos in sheet.formulas:
            want = sheet.values.get(pos)
            if isinstance(want, float):
                n += 1
                assert ours.sheets[name].values[pos] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert n > 24000


def test_verify_passes(reference):
    """No flags: every sheet's values, then every Solver model of the workbook, each checked."""
    r = run("verify", str(reference), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    order = [name for name in read_workbook(reference).sheets if name in EXCEL_OBJECTIVES]    # sheet order
    assert report["ok"] and [m["objective"] for m in report["models"]] == [
        f"{sheet}!{EXCEL_OBJECTIVES[sheet][0]}" for sheet in order] and len(order) == 3
    for model in report["models"]:
        sheet = model["sheet"]
        excel = EXCEL_OBJECTIVES[sheet][1]
        assert model["gradients"]["ok"] and model["gradients"]["objective_value"] == pytest.approx(excel, rel=1e-12)
        # every parameter, at the workbook's weights and at two perturbations of them
        assert model["gradients"]["points"] == 3
        assert len(model["gradients"]["checks"]) == 3 * {"linear": 10, "nnet": 20, "mmult": 20}[sheet]
        assert model["trace"]["traced"] and model["trace"]["ok"]


def test_verify_names_an_altered_cached_value(reference, tmp_path):
    bad = tmp_path / "altered.xlsx"
    patch_workbook(reference, bad, {"nnet": {(10, 31): 0.123456}})     # nnet!AE10, a ReLU output
    r = run("verify", str(bad))
    assert r.returncode == 1
    assert "FAIL nnet" in r.stdout and "first nnet!AE10 =" in r.stdout and "cached 0.123456, recomputed" in r.stdout
    assert "ok   mmult" in r.stdout
    r = run("verify", str(bad), "--sheet", "mmult")          # --sheet narrows the check to that sheet
    assert r.returncode == 0 and "nnet" not in r.stdout


def test_gradients_away_from_the_optimum(reference):
    """At the Solver optimum gradients are ~1e-8; at perturbed weights the check has teeth."""
    c = compile_workbook(reference, sheet="nnet")
    torch.manual_seed(0)
    with torch.no_grad():
        c.model.weights["nnet_R4_AA5"].add_(torch.randn(2, 10, dtype=torch.float64) * 0.3)
    report = check_gradients(c.model)
    assert report.ok
    assert max(abs(g.autograd) for g in report.checks) > 1e-3
    assert max(g.rel for g in report.checks) < 1e-6


def test_inspect_reports_the_network(reference):
    r = run("inspect", str(reference), "--sheet", "nnet", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"]["objective"] == "nnet!AH1" and info["model"]["sense"] == "min"
    assert [layer["layer"] for layer in info["layers"]] == [
        "linear 10→1 (const · param)", "ReLU", "linear 10→1 (const · param)", "ReLU", "add",
        "squared error", "mean"]
    assert info["families"] == 7 and info["formula_cells"] > 9000


def test_several_models_use_the_sheet_it_opens_on(reference):
    """Excel saved the workbook on nnet: without --sheet that model is used, as in Excel's Solver
    dialog; verify checks every model, or the one --sheet names."""
    r = run("inspect", str(reference), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["objective"] == "nnet!AH1"
    r = run("verify", str(reference), "--sheet", "MMULT", "--json")     # --sheet narrows verify to one sheet
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [m["objective"] for m in report["models"]] == ["mmult!AA1"] and \
        [v["sheet"] for v in report["values"]] == ["mmult"]
