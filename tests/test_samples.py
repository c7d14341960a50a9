"""The sample workbooks in sample_workbooks/: their cached values come from LibreOffice, xl2nn
verifies against them, train lowers each loss, and LibreOffice agrees with what train reports."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xl2nn.api import load
from xl2nn.compiler.lower import compile_model
from xl2nn.compiler.model import find_model, solver_sheets
from .libreoffice import find_soffice, recalculate_many
from xl2nn.reader import read_workbook
from xl2nn.verify import check_gradients
from xl2nn.writer import patch_workbook

from .conftest import ROOT, run_cli

SAMPLES = ROOT / "sample_workbooks"
# stem -> the sheet it opens on (its default model), every model sheet -> objective cell
MODELS = {
    "titanic": ("nnet", {"linear": "linear!AA7", "nnet": "nnet!AH1", "mmult": "mmult!AA1"}),
    "linear_regression": ("regression", {"regression": "regression!H6"}),
    "softmax_regression": ("softmax", {"softmax": "softmax!W8"}),
    "sgd_by_hand": ("sgd", {"sgd": "sgd!T6"}),
    "convolution": ("conv", {"conv": "conv!P9"}),
}
# What train reaches from the workbook's weights with the defaults (sgd, lr 0.1, 1000 steps).
TRAINED_BELOW = {"titanic": 0.145, "linear_regression": 0.0101, "softmax_regression": 0.2, "sgd_by_hand": 0.0101,
                 "convolution": 0.001}
SGD = SAMPLES / "sgd_by_hand.xlsx"
HAND = [("K4:K33", "F4:F33", "C4:C33"), ("L4:L33", "F4:F33", "D4:D33")]
needs_soffice = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")


def path(stem: str) -> Path:
    return SAMPLES / f"{stem}.xlsx"


main = run_cli


# --------------------------------------------------------------------------- the files

@pytest.mark.parametrize("stem", sorted(MODELS))
def test_sample_file_has_what_excel_needs(stem):
    f = path(stem)
    assert f.stat().st_size < 1 << 20
    wb = read_workbook(f)
    opens_on, models = MODELS[stem]
    assert list(wb.sheets)[0] == "README" and wb.active_sheet == opens_on
    readme = " ".join(str(v) for v in wb.sheets["README"].values.values())
    assert f"xl2nn train sample_workbooks/{stem}.xlsx" in readme
    assert sorted(solver_sheets(wb)) == sorted(models)
    for sheet, objective in models.items():
        idx = wb.sheets[sheet].index
        names = {n.name: n for n in wb.names if n.sheet_index == idx}
        assert names["solver_opt"].text.replace("$", "") == objective
        assert all(n.hidden for n in names.values()) and len(names) == 27     # as Excel writes them
    with zipfile.ZipFile(f) as zf:
        assert not any(n.startswith("xl/calcChain") for n in zf.namelist())
    if stem == "titanic":
        assert sorted(wb.tables) == ["table_linear", "table_mmult", "table_nnet"]
        assert all(t.data_rows == (4, 894) for t in wb.tables.values())          # all 891 passengers
        (area, text), = wb.sheets["mmult"].arrays
        assert str(area) == "mmult!V4:W894" and text.startswith("MMULT(Table_mmult[[SibSp]:[Ones]]")
        assert wb.sheets["nnet"].formulas[(4, 29)].text.startswith("SUMPRODUCT(Table_nnet[[#This Row],[SibSp]:")
    elif stem == "convolution":
        arrays = wb.sheets["conv"].arrays        # one array formula per feature-map cell, as Excel 365 saves them
        assert len(arrays) == 100 and all(area.size == 1 for area, _ in arrays)
        graph = load(f)[1]
        assert graph.family_at("conv", 19, 2).size == 100         # ... compiled to one family
    elif stem != "sgd_by_hand":
        assert len(wb.tables) == 1


def test_titanic_rows_are_the_projects_data():
    with open(SAMPLES / "data" / "titanic.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 891
    sheet = read_workbook(path("titanic")).sheets["linear"]
    for i in (0, 5, 890):                 # row 6 of the CSV has no Age: the sheet holds the mode, 24
        r = rows[i]
        assert sheet.values[(4 + i, 1)] == float(r["Survived"])
        assert sheet.values[(4 + i, 5)] == (float(r["Age"]) if r["Age"] else 24.0)
        assert sheet.values[(4 + i, 6)] == float(r["Fare"])


# --------------------------------------------------------------------------- verify

@pytest.mark.parametrize("stem", sorted(MODELS))
def test_verify_passes_with_no_flags(stem):
    """The cached values are LibreOffice's (see test_cached_values_are_libreoffices)."""
    rc, out, err = main("verify", str(path(stem)), "--json")
    assert rc == 0, out + err
    report = json.loads(out)
    opens_on, models = MODELS[stem]
    # every Solver model of the workbook, in sheet order
    assert report["ok"] and [m["objective"] for m in report["models"]] == list(models.values())
    assert all(v["ok"] and v["checked"] > 0 and v["skipped"] == 0 for v in report["values"])
    assert sorted(v["sheet"] for v in report["values"]) == sorted(models)
    assert all(m["gradients"]["ok"] and m["gradients"]["checks"] for m in report["models"])


def test_titanic_other_models_verify():
    wb, graph = load(path("titanic"))
    losses = {}
    for sheet in ("linear", "mmult"):
        report = check_gradients(compile_model(wb, graph, find_model(wb, sheet)))
        # every parameter at the workbook's weights and at two perturbations of them
        assert report.ok and report.points == 3 and len(report.checks) == 3 * {"linear": 10, "mmult": 20}[sheet]
        assert [c.point for c in report.checks] == [k for k in range(3) for _ in range(len(report.checks) // 3)]
        losses[sheet] = report.objective
    # mmult starts from nnet's weights: one MMULT equals the two SUMPRODUCT units.
    assert losses["mmult"] == pytest.approx(wb.sheets["nnet"].values[(1, 34)], rel=1e-12)


@pytest.mark.parametrize("grad,of,wrt", HAND)
def test_verify_grad_passes_on_sgd_by_hand(grad, of, wrt):
    rc, out, err = main("verify", str(SGD), "--grad", grad, "--of", of, "--wrt", wrt)
    assert rc == 0, out + err
    assert "  ok   30 rows" in out and out.rstrip().endswith("verify: passed")
    assert "the rows are chained" in out          # row k's b and a come from row k-1


def test_verify_grad_names_a_wrong_cached_derivative(tmp_path):
    """A hand-written derivative that is a wrong number: its row is named."""
    bad = tmp_path / "typed.xlsx"
    good = read_workbook(SGD).sheets["sgd"].values[(17, 11)]
    patch_workbook(SGD, bad, {"sgd": {(17, 11): good + 0.25}})              # K17
    rc, out, _ = main("verify", str(bad), "--grad", "K4:K33", "--of", "F4:F33", "--wrt", "C4:C33")
    assert rc == 1
    assert f"FAIL 1 of 30 rows differ; first: row 17: sgd!K17 holds {good + 0.25:.10g}, autograd" in out


def test_verify_grad_names_a_wrong_derivative_formula(tmp_path):
    """A teacher's slip (the 2 forgotten in de/db on one row), saved without cached values."""
    openpyxl = pytest.importorskip("openpyxl")
    bad = tmp_path / "slip.xlsx"
    wb = openpyxl.load_workbook(SGD)
    wb["sgd"]["K17"] = "=(E17-B17)"
    wb.save(bad)
    rc, out, _ = main("verify", str(bad), "--grad", "K4:K33", "--of", "F4:F33", "--wrt", "C4:C33", "--json")
    report, = json.loads(out)["hand_gradients"]
    assert rc == 1 and [r["row"] for r in report["rows"] if not r["ok"]] == [17]
    first = report["first_failure"]
    assert first["grad_cell"] == "sgd!K17" and first["autograd"] == pytest.approx(2 * first["recomputed"])


# --------------------------------------------------------------------------- train, judged by LibreOffice

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """`xl2nn train FILE` with no flags but -o (the README's command), and titanic's MMULT model."""
    folder = tmp_path_factory.mktemp("samples")
    runs = {stem: [] for stem in MODELS} | {"titanic:mmult": ["--sheet", "mmult", "--steps", "200"]}
    out = {}
    for name, flags in runs.items():
        dst = folder / f"{name.replace(':', '_')}.xlsx"
        rc, stdout, stderr = main("train", str(path(name.split(":")[0])), *flags, "-o", str(dst), "--json")
        assert rc == 0, stderr
        assert stderr == ""
        out[name] = (json.loads(stdout), dst)
    return out


@pytest.mark.parametrize("stem", sorted(MODELS))
def test_train_lowers_the_loss(trained, stem):
    info, dst = trained[stem]
    opens_on, models = MODELS[stem]
    assert info["objective"] == models[opens_on] and info["steps"] == 1000 and info["init"] == "workbook"
    assert info["final_loss"] < info["start_loss"]
    assert info["final_loss"] < TRAINED_BELOW[stem]
    assert info["start_loss"] == pytest.approx(read_workbook(path(stem)).sheets[opens_on].values[
        _rc(models[opens_on])], rel=1e-12)                  # step 0 is the workbook's own state


def test_titanic_mmult_trains(trained):
    info, _ = trained["titanic:mmult"]
    assert info["objective"] == "mmult!AA1" and info["final_loss"] < info["start_loss"] * 0.5


@pytest.fixture(scope="module")
def libreoffice(trained, tmp_path_factory) -> dict[Path, Path]:
    """Every trained output and every sample, recalculated by LibreOffice in one soffice run."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    folder = tmp_path_factory.mktemp("libreoffice")
    sources = [dst for _, dst in trained.values()] + [path(stem) for stem in MODELS]
    pairs = [(src, folder / f"{i}.xlsx") for i, src in enumerate(sources)]
    recalculate_many(pairs)
    return dict(pairs)


def test_libreoffice_gives_the_loss_train_reported(trained, libreoffice):
    for name, (info, dst) in trained.items():
        sheet = info["objective"].split("!")[0]
        got = read_workbook(libreoffice[dst]).sheets[sheet].values[_rc(info["objective"])]
        assert got == pytest.approx(info["final_loss"], rel=1e-9), name


def test_cached_values_are_libreoffices(libreoffice):
    """Recalculated by LibreOffice again, every formula cell keeps its cached value: the values
    xl2nn is verified against came from LibreOffice, not from xl2nn."""
    for stem in MODELS:
        src = path(stem)
        ours, theirs = read_workbook(src), read_workbook(libreoffice[src])
        n = 0
        for name, sheet in ours.sheets.items():
            for pos in sheet.formulas:
                want, got = sheet.values[pos], theirs.sheets[name].values[pos]
                assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (src.name, name, pos)
                n += 1
        assert n > 200, src.name


@needs_soffice
def test_build_reproduces_the_committed_workbooks(tmp_path):
    """sample_workbooks/build.py gives these files again (byte for byte with the LibreOffice that
    built them; to LibreOffice's rounding with another version)."""
    r = subprocess.run([sys.executable, str(SAMPLES / "build.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for stem in MODELS:
        new, old = tmp_path / f"{stem}.xlsx", path(stem)
        if new.read_bytes() == old.read_bytes():
            continue
        a, b = read_workbook(new), read_workbook(old)
        assert list(a.sheets) == list(b.sheets) and sorted(a.tables) == sorted(b.tables)
        assert {(n.name, n.text, n.sheet_index, n.hidden) for n in a.names} == \
               {(n.name, n.text, n.sheet_index, n.hidden) for n in b.names}
        for name, sheet in b.sheets.items():
            assert a.sheets[name].formulas == sheet.formulas
            for pos, v in sheet.values.items():
                w = a.sheets[name].values.get(pos)
                assert w == (pytest.approx(v, rel=1e-12, abs=1e-15) if isinstance(v, float) else v)


def _rc(cell: str) -> tuple[int, int]:
    from xl2nn.cells import parse_a1
    return parse_a1(cell.split("!")[-1])


def test_inspect_counts_the_ops_a_forward_runs():
    """The interpreted forward of titanic's nnet is the hand-written network's 17 torch ops
    (README's tour): no check that only eval needs may cost an op in training's forward."""
    rc, out, err = main("inspect", str(path("titanic")), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["families"] == 7 and report["tensor_ops"] == 17
