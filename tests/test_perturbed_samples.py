"""The sample workbooks with perturbed inputs: LibreOffice against xl2nn on every formula cell.

The samples' cached values are LibreOffice's at one point; `verify` checks xl2nn there. Here
each sample is moved away from it: a seeded random subset of its constant numeric cells (data
and parameters alike) is scaled, shifted by noise, set to 0, negated or made large, without
regard for the formulas' domain (a LN that gets a negative must be an error in both engines).
openpyxl saves the result with its formulas and no cached values; LibreOffice recalculates all
the perturbed files in one soffice call; xl2nn recalculates the same files (`load` + the grid
`recalculate` that `xl2nn eval` runs). Every formula cell (array formulas: every cell of the
range) must agree: numbers to rel 1e-9 (abs 1e-12), errors as errors, booleans and text equal.
Nothing may be skipped, and every Solver objective must have moved off its cached value, so the
comparison cannot pass on unchanged numbers.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from xl2nn.api import load
from xl2nn.cells import CellError, cell_name
from xl2nn.compiler.grid import recalculate
from xl2nn.compiler.model import find_model, solver_sheets
from .libreoffice import find_soffice, recalculate_many
from xl2nn.reader import read_workbook

from .conftest import ROOT

pytestmark = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")

RTOL, ATOL = 1e-9, 1e-12
SAMPLES = ROOT / "sample_workbooks"
# Every sample (not derived files such as titanic.trained.xlsx). Perturbation 0 is mild (scale
# and noise: the objectives stay numbers and must move); the others are wild (zeros, sign
# flips, x1000: LN, LOG10 and EXP leave their domain and errors must match). titanic, ~30k
# formula cells, gets one of each, the others PERTURBATIONS in all.
STEMS = sorted(p.stem for p in SAMPLES.glob("*.xlsx") if "." not in p.stem)
PERTURBATIONS = 3
BIG = {"titanic"}
FRACTION = 0.25          # share of the numeric constant cells each perturbation changes
# (sample, sheet) -> table columns (by header) whose perturbed values stay >= 0: none now.
# (titanic's mmult sheet feeds LOG10(Fare+1) of every row into one MMULT; a negative fare's
# error spoils only its row of the product, see test_mmult_of_an_error_entry.)
NON_NEGATIVE: dict[tuple[str, str], set[str]] = {}


def perturb(src: Path, dst: Path, seed: int, wild: bool) -> int:
    """Write `src` with a seeded random subset of its numeric constants changed; no cached
    values (openpyxl writes formulas only). Returns how many cells changed."""
    from openpyxl import load_workbook
    rng = random.Random(seed)
    wb = load_workbook(src)
    changed = 0
    for ws in wb.worksheets:
        headers = NON_NEGATIVE.get((src.stem, ws.title), set())
        keep = {c.column for row in ws.iter_rows(max_row=10) for c in row if c.value in headers}
        for row in ws.iter_rows():
            for cell in row:
                x = cell.value
                if isinstance(x, bool) or not isinstance(x, (int, float)) or rng.random() >= FRACTION:
                    continue
                k = rng.random() if wild else rng.random() * 0.7
                if k < 0.45:
                    y = x * rng.uniform(0.5, 1.5)
                elif k < 0.7:
                    y = x + rng.gauss(0, 0.1 + 0.1 * abs(x))
                elif k < 0.8:
                    y = 0.0
                elif k < 0.92:
                    y = -x if x else -1.0
                else:
                    y = x * 1000.0 if x else 1000.0
                cell.value = abs(y) if cell.column in keep else y
                changed += 1
    wb.save(dst)
    return changed


def agree(want: object, got: object) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, float):
        return type(got) is float and math.isfinite(got) and abs(got - want) <= RTOL * abs(want) + ATOL
    if isinstance(want, CellError):
        return isinstance(got, CellError)
    return want == got or (want in (None, "") and got in (None, ""))


def disagreements(perturbed: Path, judged: Path) -> tuple[list[str], int]:
    """xl2nn's recalculation of `perturbed` against LibreOffice's (`judged`), every formula
    cell: the lines that differ, and how many cells were compared."""
    wb, graph = load(perturbed)
    recalc = recalculate(wb, graph)
    assert not recalc.skipped, f"{perturbed.name}: xl2nn skipped {recalc.skipped}"
    lo = read_workbook(judged)
    bad, n = [], 0
    for name, sheet in wb.sheets.items():
        cells = set(sheet.formulas)
        for area, _ in sheet.arrays:
            cells.update(area.cells())
        for pos in sorted(cells):
            want, got = lo.sheets[name].values.get(pos), recalc.grids.value(name, *pos)
            n += 1
            if not agree(want, got):
                f = sheet.formulas.get(pos)
                bad.append(f"{cell_name(name, *pos)} ={f.text if f else '{array}'}: "
                           f"LibreOffice {want!r}, xl2nn {got!r}")
    return bad, n


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> dict[str, list[tuple[Path, Path, int]]]:
    """stem -> [(perturbed file, LibreOffice's recalculation of it, cells changed)], all
    recalculated in one soffice call."""
    d = tmp_path_factory.mktemp("perturbed")
    runs: dict[str, list[tuple[Path, Path, int]]] = {}
    for stem in STEMS:
        for i in range(2 if stem in BIG else PERTURBATIONS):
            src = d / f"{stem}.p{i}.xlsx"
            changed = perturb(SAMPLES / f"{stem}.xlsx", src, seed=1000 * i + sum(map(ord, stem)), wild=i > 0)
            runs.setdefault(stem, []).append((src, d / f"{stem}.p{i}.lo.xlsx", changed))
    recalculate_many([(src, out) for rs in runs.values() for src, out, _ in rs], timeout=600)
    return runs


def test_the_samples_are_there():
    assert {"titanic", "linear_regression", "softmax_regression", "sgd_by_hand"} <= set(STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_perturbed_sample_agrees_with_libreoffice(stem, judged):
    original = read_workbook(SAMPLES / f"{stem}.xlsx")
    for perturbed, lo_file, changed in judged[stem]:
        assert changed > 0
        # not vacuous: every Solver objective moved off the sample's cached value
        lo = read_workbook(lo_file)
        for sheet in solver_sheets(original):
            s, r, c = find_model(original, sheet).objective
            before, after = original.sheets[s].values.get((r, c)), lo.sheets[s].values.get((r, c))
            assert isinstance(before, float), (stem, cell_name(s, r, c), before)
            if perturbed.name.endswith(".p0.xlsx"):           # the mild one: still a number
                assert isinstance(after, float), f"{perturbed.name}: {cell_name(s, r, c)} = {after!r}"
            assert after != before and not (isinstance(after, float) and math.isclose(after, before, rel_tol=1e-12)), \
                f"{perturbed.name}: the objective {cell_name(s, r, c)} did not move ({before!r})"
        bad, n = disagreements(perturbed, lo_file)
        assert n >= sum(len(sh.formulas) for sh in original.sheets.values())
        assert not bad, f"{perturbed.name}: {len(bad)} of {n} cells disagree:\n" + "\n".join(bad[:10])


def test_mmult_of_an_error_entry(tmp_path):
    """An error entry spoils the rows and columns of the product it takes part in, as
    LibreOffice computes it (found here: titanic's mmult sheet with a negative Fare)."""
    from openpyxl import Workbook
    from openpyxl.worksheet.formula import ArrayFormula
    wb = Workbook()
    ws = wb.active
    ws.title = "m"
    for r, row in enumerate([[1.0, 2.0], [3.0, "=LN(-1)"], [0.5, 0.25], [2.0, 4.0]], start=1):
        for c, v in enumerate(row, start=1):
            ws.cell(r, c, v)
    ws["D1"] = ArrayFormula("D1:E2", "=MMULT(A1:B2,A3:B4)")
    src, out = tmp_path / "mmult.xlsx", tmp_path / "mmult.lo.xlsx"
    wb.save(src)
    recalculate_many([(src, out)])
    lo = read_workbook(out).sheets["m"].values
    assert lo.get((1, 4)) == pytest.approx(4.5) and isinstance(lo.get((2, 4)), CellError)
    bad, _ = disagreements(src, out)
    assert not bad, bad


def test_the_comparison_can_fail(judged, tmp_path):
    """The judge reports a cell whose inputs LibreOffice saw differently: xl2nn recalculates a
    copy with one more input changed, against LibreOffice's values for the first version."""
    from openpyxl import load_workbook
    perturbed, lo_file, _ = judged["sgd_by_hand"][0]
    wb = load_workbook(perturbed)
    ws = wb["sgd"]
    target = next(c for row in ws.iter_rows() for c in row
                  if isinstance(c.value, float) and not isinstance(c.value, bool) and c.value != 0)
    target.value = target.value * 3 + 1
    other = tmp_path / "other.xlsx"
    wb.save(other)
    assert disagreements(perturbed, lo_file)[0] == []
    bad, _ = disagreements(other, lo_file)
    assert bad and all("LibreOffice" in line for line in bad)
    assert not agree(1.0, 1.0 + 1e-8) and not agree(CellError("#NUM!"), 0.0) and not agree(1.0, math.inf)
