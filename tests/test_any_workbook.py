"""verify on any workbook: no Solver model needed, every Solver model checked, checks declared in
an xl2nn.toml, the `pytest --xl2nn` plugin and `xl2nn.testing.assert_workbook`.

The workbooks are written as other authors write them (openpyxl, no cached values) and their
cached values are LibreOffice's, so a pass means xl2nn agrees with an engine it did not write."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from xl2nn.reader import read_workbook
from xl2nn.writer import patch_workbook

from .conftest import ROOT, run_cli
from .libreoffice import find_soffice, with_libreoffice_values

SAMPLES = ROOT / "sample_workbooks"
needs_soffice = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")
pytest_plugins = ["pytester"]

X = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, -1.0, -0.5, 0.25, 4.0]
Y = [1.2, 2.1, 2.9, 4.2, 5.1, 5.8, -1.9, -0.8, 0.6, 8.3]
# sheet -> the prediction in column C of row r (params in E2:F3), Solver's objective F5
MODELS = {"lin": "=$E$2*A{r}+$F$2",
          "quad": "=$E$2*A{r}^2+$F$2*A{r}+$E$3",
          "mlp": "=$E$3*TANH($E$2*A{r}+$F$2)+$F$3"}


def _model_sheet(ws, prediction: str, solver: bool) -> None:
    from openpyxl.workbook.defined_name import DefinedName
    ws["A1"], ws["B1"], ws["C1"], ws["D1"], ws["E1"], ws["F1"] = "x", "y", "pred", "err²", "w", "b"
    ws["E2"], ws["F2"], ws["E3"], ws["F3"] = 0.8, 0.1, 1.1, -0.2
    for i, (x, y) in enumerate(zip(X, Y), start=2):
        ws[f"A{i}"], ws[f"B{i}"] = x, y
        ws[f"C{i}"] = prediction.format(r=i)
        ws[f"D{i}"] = f"=(C{i}-B{i})^2"
    ws["E5"], ws["F5"] = "loss", f"=AVERAGE(D2:D{len(X) + 1})"
    if solver:
        for name, text in (("solver_opt", f"{ws.title}!$F$5"), ("solver_adj", f"{ws.title}!$E$2:$F$3"),
                           ("solver_typ", "2")):
            ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)


@pytest.fixture(scope="module")
def three_models(tmp_path_factory) -> Path:
    """Solver models on three sheets; the workbook opens on a README sheet with none."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: it computes the cached values")
    from openpyxl import Workbook
    wb = Workbook()
    wb.active.title = "README"
    wb["README"]["A1"] = "three models"
    for sheet, prediction in MODELS.items():
        _model_sheet(wb.create_sheet(sheet), prediction, solver=True)
    wb.active = 0
    path = tmp_path_factory.mktemp("three") / "three_models.xlsx"
    wb.save(path)
    return with_libreoffice_values(path)


@pytest.fixture(scope="module")
def no_model(tmp_path_factory) -> Path:
    """A forward pass with no Solver model at all."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: it computes the cached values")
    from openpyxl import Workbook
    wb = Workbook()
    _model_sheet(wb.active, MODELS["mlp"], solver=False)
    wb.active.title = "forward"
    path = tmp_path_factory.mktemp("plain") / "forward.xlsx"
    wb.save(path)
    return with_libreoffice_values(path)


def _verify(*args: str) -> tuple[int, dict, str]:
    rc, out, err = run_cli("verify", *args, "--json")
    return rc, json.loads(out) if out.strip() else {}, err


# --------------------------------------------------------------------------- verify, no flags

def test_every_solver_model_is_checked_none_on_the_active_sheet(three_models):
    assert read_workbook(three_models).active_sheet == "README"
    rc, report, _ = _verify(str(three_models))
    assert rc == 0 and report["ok"]
    assert [(m["sheet"], m["objective"], m["checked"]) for m in report["models"]] == \
        [("lin", "lin!F5", True), ("quad", "quad!F5", True), ("mlp", "mlp!F5", True)]
    for m in report["models"]:
        assert m["gradients"]["ok"] and len(m["gradients"]["checks"]) == 3 * 4   # 4 weights at 3 points
    assert {v["sheet"]: v["checked"] for v in report["values"]} == {s: 21 for s in MODELS}


def test_sheet_narrows_values_and_models(three_models):
    rc, report, _ = _verify(str(three_models), "--sheet", "QUAD")        # sheet names are case-insensitive
    assert rc == 0
    assert [m["objective"] for m in report["models"]] == ["quad!F5"]
    assert [v["sheet"] for v in report["values"]] == ["quad"]


def test_text_report_shows_each_model(three_models):
    rc, out, _ = run_cli("verify", str(three_models))
    assert rc == 0 and out.rstrip().endswith("verify: passed")
    for sheet in MODELS:
        assert f"gradients of {sheet}!F5 (Solver;" in out


def test_a_tampered_cached_value_is_named_with_its_formula(three_models, tmp_path):
    bad = tmp_path / "tampered.xlsx"
    good = read_workbook(three_models).sheets["quad"].values[(7, 3)]          # quad!C7
    patch_workbook(three_models, bad, {"quad": {(7, 3): good + 0.5}})
    rc, out, _ = run_cli("verify", str(bad))
    assert rc == 1 and out.rstrip().endswith("verify: FAILED")
    assert (f"first quad!C7 =$E$2*A7^2+$F$2*A7+$E$3: cached {good + 0.5!r}, recomputed {good!r}") in out
    # quad!D7 reads C7 but is recomputed from C7's recomputed value: only C7 differs
    assert "1 cell(s) differ" in out


def test_no_solver_model_is_one_line_not_an_error(no_model):
    rc, out, err = run_cli("verify", str(no_model))
    assert rc == 0, err
    assert "no Solver model in this workbook: no objective's gradients to check; name one with --params" in out
    assert "  ok   forward           21 cells" in out
    rc, report, _ = _verify(str(no_model), "--params", "E2:F3", "--loss", "F5")
    assert rc == 0 and [m["objective"] for m in report["models"]] == ["forward!F5"]
    assert report["models"][0]["source"] == "--params/--loss"


def test_a_broken_solver_model_is_reported_not_checked(three_models, tmp_path):
    """Solver names pointing at a deleted range (#REF!): the others are still checked; naming
    that sheet is an error."""
    openpyxl = pytest.importorskip("openpyxl")
    from openpyxl.workbook.defined_name import DefinedName
    wb = openpyxl.load_workbook(three_models)
    wb["lin"].defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="#REF!", hidden=True)
    broken = tmp_path / "broken.xlsx"
    wb.save(broken)
    rc, report, _ = _verify(str(broken), "--values-only")
    assert report["models"] == [] and report["no_model"] is None
    rc, report, err = _verify(str(broken))
    lin, quad, mlp = report["models"]
    assert not lin["checked"] and "#REF!" in lin["skipped"] and quad["checked"] and mlp["checked"]
    # what was checked passed, but a model could not be: exit 2 after the report, one error line
    assert report["ok"] and rc == 2 and err.startswith("xl2nn: error: model lin!$F$5 not checked:")
    rc, out, _ = run_cli("verify", str(broken))
    assert rc == 2 and "model lin!$F$5 (Solver): not checked:" in out and "gradients of quad!F5" in out
    assert out.rstrip().endswith("verify: incomplete: 1 model not checked")
    rc, _, err = run_cli("verify", str(broken), "--sheet", "lin")
    assert rc == 2 and "#REF!" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- declared checks

SGD_TOML = """\
[[grad]]
workbooks = "*.xlsx"
sheet = "sgd"
grad = "K4:K33"
of = "F4:F33"
wrt = "C4:C33"
"""


def _sgd_copy(folder: Path, toml: str | None = SGD_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "sgd_by_hand.xlsx"
    shutil.copyfile(SAMPLES / "sgd_by_hand.xlsx", dst)
    if toml is not None:
        (folder / "xl2nn.toml").write_text(toml, encoding="utf-8")
    return dst


def test_verify_runs_the_checks_an_xl2nn_toml_declares(tmp_path):
    wb = _sgd_copy(tmp_path / "a")
    rc, report, _ = _verify(str(wb))
    assert rc == 0
    hand, = report["hand_gradients"]
    assert hand["grad"] == "sgd!K4:K33" and hand["ok"] and len(hand["rows"]) == 30
    assert [m["objective"] for m in report["models"]] == ["sgd!T6"]        # the Solver model too
    # a wrong cached derivative fails, named
    bad = tmp_path / "a" / "bad.xlsx"
    k17 = read_workbook(wb).sheets["sgd"].values[(17, 11)]
    patch_workbook(wb, bad, {"sgd": {(17, 11): k17 + 0.25}})
    rc, out, _ = run_cli("verify", str(bad))
    assert rc == 1 and f"row 17: sgd!K17 holds {k17 + 0.25:.10g}, autograd" in out


def test_pyproject_tool_table_declares_too(tmp_path):
    wb = _sgd_copy(tmp_path / "proj" / "books", toml=None)
    (tmp_path / "proj" / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n" + SGD_TOML.replace("[[grad]]", "[[tool.xl2nn.grad]]").replace(
            '"*.xlsx"', '"books/sgd_*.xlsx"'), encoding="utf-8")
    rc, report, _ = _verify(str(wb))
    assert rc == 0 and [h["grad"] for h in report["hand_gradients"]] == ["sgd!K4:K33"]


@pytest.mark.parametrize("toml, says", [
    ("[[grad]]\nworkbooks = '*.xlsx'\ngrad = 'K4:K33'\n", "missing of, wrt"),
    ("[[grad]]\nworkbooks = '*.xlsx'\ngrad = 'K4:K33'\nof = 'F4:F33'\nwrt = 'C4:C33'\nrtol = '1'\n", "unknown rtol"),
    ("[[grad]\n", "not valid TOML"),
    ("[[grad]]\nworkbooks = '*.xlsx'\nsheet = 'sgd'\ngrad = 'K4:K33'\nof = 'F4:F32'\nwrt = 'C4:C33'\n", "F4:F32"),
])
def test_a_bad_declaration_is_one_line_naming_the_file(tmp_path, toml, says):
    wb = _sgd_copy(tmp_path / "b", toml)
    rc, out, err = run_cli("verify", str(wb))
    assert rc == 2 and out == "" and "xl2nn.toml" in err and says in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- xl2nn.testing and pytest --xl2nn

def test_assert_workbook(tmp_path):
    from xl2nn.testing import assert_workbook
    report = assert_workbook(SAMPLES / "sgd_by_hand.xlsx", grad="K4:K33", of="F4:F33", wrt="C4:C33")
    assert report.ok and len(report.hands[0].rows) == 30
    bad = tmp_path / "bad.xlsx"
    f9 = read_workbook(SAMPLES / "sgd_by_hand.xlsx").sheets["sgd"].values[(9, 6)]
    patch_workbook(SAMPLES / "sgd_by_hand.xlsx", bad, {"sgd": {(9, 6): f9 * 2}})
    with pytest.raises(AssertionError, match=r"sgd!F9 =\(E9-B9\)\^2: cached .*, recomputed "):
        assert_workbook(bad, values_only=True)


def test_pytest_plugin_on_the_sample_folder_passes_then_fails_naming_the_cell(pytester):
    """`pytest --xl2nn sample_workbooks` (a copy): every sheet's values, every Solver model and
    the hand-written checks sample_workbooks/xl2nn.toml declares pass; one cached value changed
    fails that sheet's item alone, naming the cell, its formula and both numbers."""
    # (in a subprocess, as a user runs it: an in-process run drops the torch modules it imported
    # from sys.modules afterwards, and torch cannot be imported twice in one process)
    books = pytester.path / "samples"
    books.mkdir()
    # (the samples the project builds: not what `xl2nn train` wrote beside them, titanic.trained.xlsx)
    for f in [*(f for f in SAMPLES.glob("*.xlsx") if "." not in f.stem), SAMPLES / "xl2nn.toml"]:
        shutil.copyfile(f, books / f.name)
    result = pytester.runpytest_subprocess("--xl2nn", str(books), "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=25)
    result.stdout.fnmatch_lines(["*backprop.xlsx::grad?dE/dw? PASSED*", "*collab_filter.xlsx::gradients?bias!Y2? PASSED*", "*forward_pass.xlsx::values?attention? PASSED*",
                                 "*sgd_by_hand.xlsx::grad?de/da? PASSED*", "*titanic.xlsx::gradients?mmult!AA1? PASSED*"])
    wb = books / "forward_pass.xlsx"
    cell = read_workbook(wb).sheets["attention"].values[(18, 20)]            # attention!T18
    patch_workbook(wb, books / "tmp.xlsx", {"attention": {(18, 20): cell + 1e-6}})
    (books / "tmp.xlsx").replace(wb)
    result = pytester.runpytest_subprocess("--xl2nn", str(books), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=24, failed=1)
    result.stdout.fnmatch_lines(["*forward_pass.xlsx: values?attention?*",
                                 "attention!T18 {=MMULT(S10:W14,N17:Q21)} (array formula over S17:V21): "
                                 f"cached {cell + 1e-6!r}, recomputed *",
                                 "FAILED samples/forward_pass.xlsx::values?attention? - attention!T18*"])
    got = re.search(r"attention!T18 .*, recomputed (\S+)", result.stdout.str()).group(1)
    assert float(got) == pytest.approx(cell, rel=1e-9, abs=1e-12)      # LibreOffice's value, recomputed
    assert "Traceback" not in result.stdout.str()


def test_pytest_plugin_names_a_declaration_that_does_not_fit(pytester):
    books = pytester.path / "books"
    _sgd_copy(books)
    shutil.copyfile(SAMPLES / "linear_regression.xlsx", books / "linear_regression.xlsx")
    result = pytester.runpytest_subprocess("--xl2nn", str(books), "-p", "no:cacheprovider")
    # values + Solver model of each, and the hand-written check the xl2nn.toml declares for both files
    # (its glob is *.xlsx: linear_regression has no sgd sheet, so that check fails, naming the entry)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*linear_regression.xlsx: grad?K4:K33?*",
                                 "*xl2nn.toml [[][[]grad]] #1: *no sheet named 'sgd'*"])


@pytest.mark.parametrize("stem", ["forward_pass", "backprop"])
def test_samples_without_a_solver_model_inspect_and_verify_with_no_flags(stem):
    rc, out, err = run_cli("inspect", str(SAMPLES / f"{stem}.xlsx"))
    assert rc == 0 and "no Solver model" in out, err
    rc, report, err = _verify(str(SAMPLES / f"{stem}.xlsx"))
    assert rc == 0 and report["ok"] and report["models"] == [] and "no Solver model" in report["no_model"], err
    assert all(v["checked"] > 0 and v["ok"] for v in report["values"])
    # backprop.xlsx: the block sample_workbooks/xl2nn.toml declares ran, 50 steps × 8 weights
    assert [len(h["rows"]) for h in report["hand_gradients"]] == ([400] if stem == "backprop" else [])


# --------------------------------------------------------------------------- eval says what differs

def test_eval_compares_every_recomputed_cell_with_the_cached_one(tmp_path):
    """eval never turns a cached number into another number or an error without a word: it
    counts the recomputed cells that agree with the file and names the first that does not."""
    src = SAMPLES / "forward_pass.xlsx"
    rc, out, err = run_cli("eval", str(src), "-o", str(tmp_path / "same.xlsx"))
    assert rc == 0 and "compared  611 of 611 recomputed cells agree with the file's cached values" in out, err
    bad = tmp_path / "bad.xlsx"
    patch_workbook(src, bad, {"cnn": {(13, 2): 99.0}})                      # cnn!B13, a conv output
    rc, out, err = run_cli("eval", str(bad), "-o", str(tmp_path / "e.xlsx"), "--json")
    info = json.loads(out)
    assert rc == 0 and info["compared_with_cached"] == 611 and info["differ_from_cached"] == 1
    assert "first cnn!B13 =SUMPRODUCT(B3:D5,$K$3:$M$5): cached 99.0, recomputed " in err
    # --strict: nothing written, exit 1 (a disagreement, as verify's)
    rc, out, err = run_cli("eval", str(bad), "-o", str(tmp_path / "strict.xlsx"), "--strict")
    assert rc == 1 and not (tmp_path / "strict.xlsx").exists()
    assert err.strip().splitlines()[-1].startswith(f"xl2nn: error: {bad}: --strict: 1 recomputed cells differ")


def test_eval_of_a_file_without_cached_values_says_there_was_nothing_to_compare(tmp_path):
    from openpyxl import Workbook
    wb = Workbook()
    wb.active["A1"], wb.active["A2"] = 2, "=A1*3"
    wb.save(tmp_path / "plain.xlsx")
    rc, out, err = run_cli("eval", str(tmp_path / "plain.xlsx"), "-o", str(tmp_path / "o.xlsx"))
    assert rc == 0 and "compared  nothing: the file holds no cached numbers for its formula cells" in out, err


def test_sheet_narrows_the_cells_not_recomputed_also_under_a_quoted_sheet_name(tmp_path):
    """verify --sheet lists the cells it kept on that sheet, its name quoted in range texts."""
    from openpyxl import Workbook
    wb = Workbook()
    wb.active.title = "it's"
    wb.active["A1"], wb.active["B1"] = "=NOW()*0", "=A1+1"
    other = wb.create_sheet("other")
    other["A1"] = "=NOW()*0"
    wb.save(tmp_path / "q.xlsx")
    rc, report, err = _verify(str(tmp_path / "q.xlsx"), "--sheet", "it's")
    assert rc == 0, err
    assert report["not_recomputed"] == {"NOW": ["'it''s'!A1"]}
