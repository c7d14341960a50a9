"""RAND in a model is dropout: `train` draws the mask cells afresh each step (seeded, on the
training device); `eval` and `verify` keep the values the file saved; `inspect` says which."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xl2nn.reader import read_workbook

from .conftest import run_cli
from .libreoffice import find_soffice, with_libreoffice_values

X = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]
Y = [1.1, 2.1, 2.9, 4.2, 5.1, 5.8, 7.2, 8.1]
MASK = "=IF(RAND()<0.75,1,0)/0.75"


def _workbook(path: Path, mask: str | None = MASK, inline: bool = False) -> Path:
    """y ≈ (w·x + b)·mask, the mask a column of RAND cells (inverted dropout, keep 0.75)."""
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    wb = Workbook()
    ws = wb.active
    ws.title = "model"
    ws["F1"], ws["G1"] = 0.3, 0.1
    for i, (x, y) in enumerate(zip(X, Y), start=1):
        ws[f"A{i}"], ws[f"B{i}"] = x, y
        if inline:              # RAND on the parameter path itself
            ws[f"D{i}"] = f"=(($F$1*A{i}+$G$1)*(RAND()<0.75)/0.75-B{i})^2"
            continue
        ws[f"C{i}"] = mask
        ws[f"D{i}"] = f"=(($F$1*A{i}+$G$1)*C{i}-B{i})^2"
    ws["H1"] = f"=AVERAGE(D1:D{len(X)})"
    for name, text in (("solver_opt", "model!$H$1"), ("solver_adj", "model!$F$1:$G$1"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


@pytest.fixture(scope="module")
def dropout(tmp_path_factory) -> Path:
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed: it computes the cached values (the saved draws)")
    return with_libreoffice_values(_workbook(tmp_path_factory.mktemp("drop") / "drop.xlsx"))


def _train(src: Path, out: Path, *args: str) -> dict:
    rc, stdout, err = run_cli("train", str(src), "--steps", "200", "--lr", "0.02", "-o", str(out), "--json", *args)
    assert rc == 0, err
    return json.loads(stdout)


def _saved_masks(path: Path) -> np.ndarray:
    values = read_workbook(path).sheets["model"].values
    return np.array([values[(i, 3)] for i in range(1, len(X) + 1)])


def test_eval_and_verify_use_the_saved_draws_and_inspect_says_so(dropout):
    masks = _saved_masks(dropout)
    kept = np.isclose(masks, 1 / 0.75, rtol=1e-12)
    assert np.all(kept | (masks == 0))          # LibreOffice's draws, saved as the cached values
    rc, out, err = run_cli("verify", str(dropout), "--json")
    assert rc == 0, err
    model, = json.loads(out)["models"]
    assert model["gradients"]["ok"] and model["trace"]["traced"]
    w, b = 0.3, 0.1
    want = np.mean(((w * np.array(X) + b) * masks - np.array(Y)) ** 2)
    assert model["gradients"]["objective_value"] == pytest.approx(want, rel=1e-12)
    rc, out, err = run_cli("inspect", str(dropout), "--json")
    assert rc == 0 and json.loads(out)["dropout"] == ["model!C1:C8"], err


def test_train_draws_fresh_masks_each_step_seeded(dropout, tmp_path):
    a = _train(dropout, tmp_path / "a.xlsx")
    again = _train(dropout, tmp_path / "again.xlsx")
    other = _train(dropout, tmp_path / "other.xlsx", "--seed", "7")
    assert a["dropout"] == ["model!C1:C8"] and a["final_loss"] < a["start_loss"]
    weights = {k: read_workbook(tmp_path / f"{k}.xlsx").sheets["model"].values for k in ("a", "again", "other")}
    w = {k: (v[(1, 6)], v[(1, 7)]) for k, v in weights.items()}
    assert w["a"] == w["again"] and w["a"] != w["other"]               # the seed decides the draws
    # start and final losses are the sheet's, with the saved draws (the same for every seed)
    w0, b0 = 0.3, 0.1
    want = np.mean(((w0 * np.array(X) + b0) * _saved_masks(dropout) - np.array(Y)) ** 2)
    assert again["start_loss"] == a["start_loss"] == other["start_loss"] == pytest.approx(want, rel=1e-12)
    # The same sheet with the saved draws typed in as numbers trains to other weights: the
    # dropout sheet's masks really were drawn again.
    frozen = _workbook(tmp_path / "frozen.xlsx", mask=None)
    from openpyxl import load_workbook
    book = load_workbook(frozen)
    for i, m in enumerate(_saved_masks(dropout), start=1):
        book["model"][f"C{i}"] = float(m)
    book.save(frozen)
    fixed = _train(frozen, tmp_path / "fixed.xlsx")
    assert fixed["dropout"] == [] and fixed["final_loss"] != pytest.approx(a["final_loss"], rel=1e-6)
    # The final loss is the sheet's, at the trained weights with the saved draws; the written
    # workbook shows it (no warning that the recalculated objective differs).
    masks = _saved_masks(dropout)
    wf, bf = w["a"]
    assert a["final_loss"] == pytest.approx(np.mean(((wf * np.array(X) + bf) * masks - np.array(Y)) ** 2), rel=1e-12)
    assert not any("differs" in x for x in a["warnings"])
    assert read_workbook(tmp_path / "a.xlsx").sheets["model"].values[(1, 8)] == pytest.approx(a["final_loss"],
                                                                                             rel=1e-12)


def test_rand_on_the_parameter_path_itself_is_refused(tmp_path):
    src = _workbook(tmp_path / "inline.xlsx", inline=True)
    rc, out, err = run_cli("train", str(src), "--steps", "5", "-o", str(tmp_path / "o.xlsx"))
    assert rc == 2 and "RAND (volatile, and it depends on the parameters)" in err and len(err.strip().splitlines()) == 1
