"""Circular references and Excel's iterative calculation (<calcPr iterate iterateCount iterateDelta>).

What the engines do, measured with LibreOffice 7.4 (forced full recalculation on load) and
from Excel's documentation ("Excel stops calculating after 100 iterations or after all values
in the circular reference change by less than 0.001 between iterations, whichever comes
first"; Maximum Iterations and Maximum Change are File > Options > Formulas):

- Both iterate from the values the cells hold: a file's cached values (blank, i.e. 0, where
  there are none). LibreOffice from a cached 10 in =0.5*A1+1 gives 2.0625, from none 1.9375.
- A single-cell cycle that converges gives the same number in both: the first iterate whose
  change is under the delta (x_11 = 1.9990234375 for x = 0.5x + 1 from 0, delta 0.001).
- LibreOffice departs from Excel where the cycle does not converge within iterateCount: it
  shows Err:523 (saved as #N/A) where Excel keeps the last iterate, so a step counter =A1+1
  is always an error in LibreOffice and 100 after one recalculation from 0 in Excel. With
  iterateCount 1 LibreOffice computes the cell twice (it "closes the circle" once before its
  first iteration). It reads an absent iterateDelta as 0.0001, Excel's default is 0.001. In a
  cycle of several cells it stops computing each cell once that cell's own change is small,
  where Excel computes every cell of the cycle in every iteration until all changes are small,
  so the two stop at different iterates (e.g. 2.99927 against 2.99963 for a weight and its
  gradient); with a tight delta both reach the fixed point, and those are compared at rel 1e-9.
- Without iterative calculation LibreOffice shows Err:522 (saved as #VALUE!) and Excel warns
  and shows the cells' last values; xl2nn keeps the cached values and lists the cells.

xl2nn computes what Excel documents: every iteration computes each cell of the cycle once, in
reading order (sheet tab order, then row, then column; Excel's own order follows its calculation
chain, which it does not document), each reading the others' latest values, until the largest
change of an iteration is under iterateDelta or iterateCount iterations are done.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import pytest

from xl2nn.api import load, recalculate_workbook
from xl2nn.cells import CellError
from xl2nn.compiler.grid import recalculate
from xl2nn.reader import read_workbook
from xl2nn.writer import patch_workbook

from .conftest import run_cli
from .libreoffice import find_soffice, recalculate_many

needs_lo = pytest.mark.skipif(find_soffice() is None, reason="LibreOffice (soffice) is not installed")


def book(path: Path, cells: dict[str, object], iterate: bool | None = True, count: int | None = None,
         delta: float | None = None, solver: tuple[str, str] | None = None) -> Path:
    """A workbook as an author writes it with openpyxl: cells by 'A1' or 'sheet!A1' (the first
    sheet is 'model'), iterative calculation set as Excel's options dialog saves it, and
    optionally a Solver model (parameters, objective) on 'model'."""
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    wb = Workbook()
    wb.active.title = "model"
    for ref, value in cells.items():
        sheet, _, cell = ref.rpartition("!")
        sheet = sheet or "model"
        if sheet not in wb.sheetnames:
            wb.create_sheet(sheet)
        wb[sheet][cell] = value
    if iterate:
        wb.calculation.iterate = True
        if count is not None:
            wb.calculation.iterateCount = count
        if delta is not None:
            wb.calculation.iterateDelta = delta
    if solver is not None:
        params, objective = solver
        for name, text in (("solver_opt", f"model!{objective}"), ("solver_adj", f"model!{params}"),
                           ("solver_typ", "2")):
            wb["model"].defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path


def with_cached(path: Path, values: dict[str, float]) -> Path:
    """The workbook with these cached values ('A1' on 'model'), as the last recalculation left them."""
    from xl2nn.cells import parse_a1
    out = path.with_name(path.stem + ".cached.xlsx")
    patch_workbook(path, out, {"model": {parse_a1(ref): v for ref, v in values.items()}})
    return out


def ours(path: Path) -> dict[str, object]:
    """Every formula cell's value after xl2nn's recalculation, by 'sheet!A1'."""
    wb, graph, recalc = recalculate_workbook(path)
    return {f"{f.sheet}!{_a1(int(r), int(c))}": recalc.grids.value(f.sheet, int(r), int(c))
            for f in graph.families for r, c in zip(*f.out_cells())}


def _a1(row: int, col: int) -> str:
    from xl2nn.cells import a1
    return a1(row, col)


def libreoffice(paths: list[Path]) -> list[dict[str, object]]:
    """LibreOffice's values of the same cells after its full recalculation, one soffice run."""
    outs = recalculate_many([(p, p.with_name(p.stem + ".lo.xlsx")) for p in paths])
    got = []
    for src, out in zip(paths, outs):
        lo = read_workbook(out)
        cells = ours_cells(src)
        got.append({name: lo.sheets[sheet].values.get((r, c)) for name, (sheet, r, c) in cells.items()})
    return got


def ours_cells(path: Path) -> dict[str, tuple[str, int, int]]:
    _, graph = load(path)
    return {f"{f.sheet}!{_a1(int(r), int(c))}": (f.sheet, int(r), int(c))
            for f in graph.families for r, c in zip(*f.out_cells())}


def close(a: object, b: object, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def excel_iteration(step, x0: list[float], count: int, delta: float) -> list[float]:
    """Excel's documented iteration in plain Python: `step(x, i)` computes cell i from the latest
    values x; every iteration computes each cell once, in order; stop when the largest change is
    under delta or after count iterations."""
    x = list(x0)
    for _ in range(count):
        change = 0.0
        for i in range(len(x)):
            new = step(x, i)
            change = max(change, abs(new - x[i]))
            x[i] = new
        if change < delta:
            break
    return x


# ----------------------------------------------------------------------------- reading calcPr

def test_calc_settings_are_read_with_excels_defaults(tmp_path):
    f = book(tmp_path / "a.xlsx", {"A1": "=A1+1"}, count=7, delta=1e-5)
    assert read_workbook(f).calc.iterate and (read_workbook(f).calc.count, read_workbook(f).calc.delta) == (7, 1e-5)
    f = book(tmp_path / "b.xlsx", {"A1": "=A1+1"})             # iterate="1" alone: OOXML's (Excel's) defaults
    assert (read_workbook(f).calc.iterate, read_workbook(f).calc.count, read_workbook(f).calc.delta) == (True, 100, 0.001)
    f = book(tmp_path / "c.xlsx", {"A1": "=A1+1"}, iterate=False)
    assert not read_workbook(f).calc.iterate


def test_calc_settings_without_calcpr_or_with_bad_numbers(tmp_path):
    f = book(tmp_path / "a.xlsx", {"A1": 1})
    part = "xl/workbook.xml"
    for attrs, want in (("", (False, 100, 0.001)), ('iterate="true" iterateCount="x" iterateDelta="y"', (True, 100, 0.001)),
                        ('iterate="1" iterateCount="0" iterateDelta="-0.5"', (True, 1, 0.5))):
        out = tmp_path / f"calc{len(attrs)}.xlsx"
        with zipfile.ZipFile(f) as zin, zipfile.ZipFile(out, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == part:
                    text = data.decode()
                    start = text.index("<calcPr")
                    end = text.index("/>", start) + 2
                    data = (text[:start] + (f"<calcPr {attrs}/>" if attrs else "") + text[end:]).encode()
                zout.writestr(info, data)
        calc = read_workbook(out).calc
        assert (calc.iterate, calc.count, calc.delta) == want, attrs


# ----------------------------------------------------------------------------- judged by LibreOffice

@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Each fixture: (xl2nn's values, LibreOffice's values), LibreOffice in one run."""
    if find_soffice() is None:
        pytest.skip("LibreOffice (soffice) is not installed")
    d = tmp_path_factory.mktemp("iterative")
    files: dict[str, Path] = {}
    for delta in (0.1, 0.001, 1e-6, 1e-12):
        files[f"half {delta}"] = book(d / f"half{delta}.xlsx", {"A1": "=0.5*A1+1", "B1": "=A1*3"}, delta=delta)
        files[f"cos {delta}"] = book(d / f"cos{delta}.xlsx", {"A1": "=COS(A1)"}, delta=delta)
    files["half from cached 10"] = with_cached(
        book(d / "halfc.xlsx", {"A1": "=0.5*A1+1"}, delta=0.1), {"A1": 10.0})
    files["two sheets"] = book(d / "sheets.xlsx", {"A1": "=data!A1*0.5+1", "data!A1": "=model!A1+1",
                                                   "B1": "=A1+data!A1"}, delta=1e-10)
    files["weight"] = weight_book(d / "weight.xlsx", delta=1e-12)
    files["beside a model"] = beside_model_book(d / "beside.xlsx")
    for n in (1, 10, 100):
        files[f"counter, count {n}"] = book(d / f"counter{n}.xlsx", {"A1": "=A1+1", "B1": "=A1*10"}, count=n)
        files[f"half, count {n}"] = book(d / f"half_n{n}.xlsx", {"A1": "=0.5*A1+1"}, count=n, delta=0.001)
    files["counter, count 1, delta 5"] = book(d / "counter_d5.xlsx", {"A1": "=A1+1"}, count=1, delta=5)
    files["half, default delta"] = book(d / "halfdefault.xlsx", {"A1": "=0.5*A1+1"})
    files["counter, iteration off"] = book(d / "off.xlsx", {"A1": "=A1+1", "B1": "=A1*10"}, iterate=False)
    lo = libreoffice(list(files.values()))
    return {name: (ours(path), theirs) for (name, path), theirs in zip(files.items(), lo)}


def weight_book(path: Path, delta: float | None, count: int = 200) -> Path:
    """Gradient descent by iteration: the weight C2 updates itself from its gradient D2, which
    reads it; the loss E2 reads the weight (y = 2x + noise, mean squared error)."""
    xs, ys = [1.0, 2.0, 3.0, 4.0, 5.0], [2.1, 3.9, 6.2, 7.8, 10.1]
    cells: dict[str, object] = {"A1": "lr", "B1": 0.02, "C1": "w", "D1": "dL/dw", "E1": "loss"}
    for i, (x, y) in enumerate(zip(xs, ys), start=4):
        cells[f"A{i}"], cells[f"B{i}"] = x, y
    cells["C2"] = "=C2-$B$1*D2"
    cells["D2"] = "=SUMPRODUCT(2*(C2*A4:A8-B4:B8)*A4:A8)/5"
    cells["E2"] = "=SUMPRODUCT((C2*A4:A8-B4:B8)^2)/5"
    return book(path, cells, count=count, delta=delta)


WEIGHT_DATA = ([1.0, 2.0, 3.0, 4.0, 5.0], [2.1, 3.9, 6.2, 7.8, 10.1])


def beside_model_book(path: Path, cycle: dict[str, object] | None = None, iterate: bool = True) -> Path:
    """A Solver model (a line through the data, mean squared error in F1) and, beside it, a
    cycle the model does not read (a fixed point unless `cycle` says otherwise)."""
    cells: dict[str, object] = {"C1": 0.5, "C2": 0.1, **(cycle or {"H1": "=COS(H1)", "H2": "=H1*2"})}
    for r, (x, y) in enumerate([(1.0, 3.0), (2.0, 5.0), (3.0, 7.2)], start=1):
        cells[f"A{r}"], cells[f"B{r}"] = x, y
        cells[f"D{r}"] = f"=(A{r}*$C$1+$C$2-B{r})^2"
    cells["F1"] = "=AVERAGE(D1:D3)"
    return book(path, cells, iterate=iterate, delta=1e-12, solver=("$C$1:$C$2", "$F$1"))


@needs_lo
@pytest.mark.parametrize("delta", [0.1, 0.001, 1e-6, 1e-12])
def test_a_fixed_point_as_libreoffice_iterates_it(judged, delta):
    """A one-cell cycle that converges: the same iterate in both engines, and the cell that
    reads it computed from it."""
    for name in (f"half {delta}", f"cos {delta}"):
        got, want = judged[name]
        assert got.keys() == want.keys()
        for cell in got:
            assert close(got[cell], want[cell]), (name, cell, got[cell], want[cell])
    got, _ = judged[f"half {delta}"]
    n = next(k for k in range(1, 100) if 2 ** (1 - k) < delta)     # x_k = 2 - 2^(1-k), change 2^(1-k)
    assert got["model!A1"] == 2 - 2 ** (1 - n)


@needs_lo
def test_iteration_starts_from_the_cached_values(judged):
    got, want = judged["half from cached 10"]
    assert got["model!A1"] == want["model!A1"] == 2.0625     # 6, 4, 3, 2.5, 2.25, 2.125, 2.0625


@needs_lo
@pytest.mark.parametrize("name", ["two sheets", "weight", "beside a model"])
def test_cycles_of_several_cells_converged_as_libreoffice(judged, name):
    """Several cells (across sheets; a weight and its gradient; beside a Solver model),
    iterated to a tight delta: both engines reach the fixed point."""
    got, want = judged[name]
    assert got.keys() == want.keys()
    for cell in got:
        # The gradient at the fixed point is 0 up to where each engine stopped (1e-12 and 2e-11,
        # from a first gradient of -89): compared in absolute terms.
        abs_tol = 1e-9 if (name, cell) == ("weight", "model!D2") else 1e-12
        assert close(got[cell], want[cell], abs_tol=abs_tol), (name, cell, got[cell], want[cell])


@needs_lo
def test_the_weight_reaches_least_squares(judged):
    got, _ = judged["weight"]
    xs, ys = WEIGHT_DATA
    w = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    assert got["model!C2"] == pytest.approx(w, rel=1e-9)
    assert got["model!D2"] == pytest.approx(0.0, abs=1e-9)


@needs_lo
@pytest.mark.parametrize("n", [1, 10, 100])
def test_a_counter_counts_as_excel_documents(judged, n):
    """=A1+1 never converges: Excel stops after iterateCount iterations and keeps the value
    (n from 0); LibreOffice shows Err:523 instead (an error in the saved file)."""
    got, want = judged[f"counter, count {n}"]
    assert got == {"model!A1": float(n), "model!B1": 10.0 * n}
    assert isinstance(want["model!A1"], CellError) and isinstance(want["model!B1"], CellError)


@needs_lo
def test_one_iteration_is_one_evaluation(judged):
    """iterateCount 1 with a delta the step passes: Excel computes the cell once (1);
    LibreOffice once to close the circle and once more as its first iteration (2)."""
    got, want = judged["counter, count 1, delta 5"]
    assert (got["model!A1"], want["model!A1"]) == (1.0, 2.0)


@needs_lo
@pytest.mark.parametrize("n", [1, 10, 100])
def test_a_fixed_point_with_few_iterations(judged, n):
    """x = 0.5x + 1 from 0 (x_k = 2 - 2^(1-k)), delta 0.001, which x_11 meets. Excel: x_n for
    n < 11, else x_11. LibreOffice computes one iterate more than it counts (x_11 at 10) and
    gives Err:523 where that is not enough."""
    got, want = judged[f"half, count {n}"]
    assert got["model!A1"] == 2 - 2 ** (1 - min(n, 11))
    if n == 1:
        assert isinstance(want["model!A1"], CellError)
    else:
        assert want["model!A1"] == 2 - 2 ** -10


@needs_lo
def test_an_absent_delta_is_excels_default(judged):
    """iterate="1" without iterateDelta, as Excel saves its default settings: Excel's Maximum
    Change 0.001 stops at x_11; LibreOffice reads it as 0.0001 and goes on to x_15."""
    got, want = judged["half, default delta"]
    assert got["model!A1"] == 2 - 2 ** -10
    assert want["model!A1"] == 2 - 2 ** -14


@needs_lo
def test_without_iteration_libreoffice_gives_err522_and_xl2nn_keeps_the_cycle(judged):
    got, want = judged["counter, iteration off"]
    assert isinstance(want["model!A1"], CellError)   # Err:522, which we do not copy
    assert got["model!A1"] is None and got["model!B1"] == 0.0     # no cached value: blank, and B1 = 10 * blank


# ----------------------------------------------------------------------------- Excel's documented rule

def test_a_counter_from_its_cached_value(tmp_path):
    """Excel iterates from the current values: a counter saved at 5 is 5 + iterateCount after a
    recalculation (1, 10, 100 steps), and the cell reading it follows."""
    for n in (1, 10, 100):
        f = with_cached(book(tmp_path / f"c{n}.xlsx", {"A1": "=A1+1", "B1": "=A1*10"}, count=n),
                        {"A1": 5.0, "B1": 50.0})
        assert ours(f) == {"model!A1": 5.0 + n, "model!B1": 10 * (5.0 + n)}


def test_excels_two_cell_example(tmp_path):
    """A1 = 1+A2, A2 = 1+A1, 10 iterations: 19 and 20 (each iteration computes A1, then A2 from it)."""
    f = book(tmp_path / "e.xlsx", {"A1": "=1+A2", "A2": "=1+A1"}, count=10)
    assert ours(f) == {"model!A1": 19.0, "model!A2": 20.0}


@pytest.mark.parametrize("count,delta", [(100, 0.001), (100, 1e-5), (5, 0.001), (1, 0.001)])
def test_gradient_descent_by_iteration_as_excel_documents(tmp_path, count, delta):
    """The weight and its gradient at Excel's settings. LibreOffice stops each of the two cells
    separately once its own change is small (or gives Err:523), so it is no judge here: the
    expected values are Excel's documented rule run in plain Python."""
    xs, ys = WEIGHT_DATA
    got = ours(weight_book(tmp_path / "w.xlsx", delta=delta, count=count))

    def step(v, i):
        w, g = v
        if i == 0:
            return w - 0.02 * g
        return sum(2 * (w * x - y) * x for x, y in zip(xs, ys)) / 5
    w, g = excel_iteration(step, [0.0, 0.0], count, delta)
    assert got["model!C2"] == pytest.approx(w, rel=1e-12)
    assert got["model!D2"] == pytest.approx(g, rel=1e-12, abs=1e-15)
    assert got["model!E2"] == pytest.approx(sum((w * x - y) ** 2 for x, y in zip(xs, ys)) / 5, rel=1e-12)


def test_recurrences_are_not_cycles(tmp_path):
    """Row k from row k-1 (a per-step SGD sheet) is split into rows as before, with iterative
    calculation on or off: no cycle, nothing iterated."""
    cells: dict[str, object] = {"A1": 1.0}
    for r in range(2, 8):
        cells[f"A{r}"] = f"=A{r - 1}*0.5+B{r - 1}"
        cells[f"B{r}"] = f"=A{r}+1"
    cells["B1"] = 2.0
    f = book(tmp_path / "rec.xlsx", cells)
    wb, graph = load(f)
    assert graph.cycles == []
    recalc = recalculate(wb, graph)
    assert recalc.cycles == [] and recalc.skipped == {}
    a, b = 1.0, 2.0
    for r in range(2, 8):
        a = a * 0.5 + b
        b = a + 1
        assert recalc.grids.value("model", r, 1) == a and recalc.grids.value("model", r, 2) == b


def test_a_cell_on_the_cycle_that_xl2nn_cannot_compute_keeps_the_cycle(tmp_path):
    f = with_cached(book(tmp_path / "u.xlsx", {"A1": "=BESSELJ(B1,1)", "B1": "=A1+1", "C1": "=B1*2"}),
                    {"A1": 0.25, "B1": 1.25, "C1": 2.5})
    assert ours(f) == {"model!A1": 0.25, "model!B1": 1.25, "model!C1": 2.5}
    wb, graph, recalc = recalculate_workbook(f)
    circular, n = recalc.circular(graph)
    assert n == 1 and list(circular.values()) == [["model!B1"]] and "BESSELJ" in next(iter(circular))


# ----------------------------------------------------------------------------- the commands

def test_eval_iterates_and_says_so(tmp_path):
    f = with_cached(book(tmp_path / "c.xlsx", {"A1": "=A1+1", "B1": "=A1*10"}, count=3), {"A1": 5.0, "B1": 50.0})
    rc, out, err = run_cli("eval", str(f), "-o", str(tmp_path / "out.xlsx"))
    assert rc == 0, err
    assert "iterated  model!A1: stopped after 3 iterations (iterateCount), not converged" in out
    # the counter and what reads it moved (5 -> 8, 50 -> 80): not compared, and said so
    assert "compared  nothing" in out and "2 cells moved by iterative calculation" in out
    s = read_workbook(tmp_path / "out.xlsx").sheets["model"]
    assert (s.values.get((1, 1)), s.values.get((1, 2))) == (8.0, 80.0)


def test_without_iteration_every_command_works_beside_the_cycle(tmp_path):
    """Iterative calculation off: the cycle's cells keep their cached values (not LibreOffice's
    Err:522), every other cell is computed, eval and verify list the cycle, exit 0; a Solver
    model beside it trains."""
    f = beside_model_book(tmp_path / "off.xlsx", {"H1": "=H1+1", "H2": "=H1*10"}, iterate=False)
    f = with_cached(f, {"H1": 7.0, "H2": 70.0, "D1": (0.5 + 0.1 - 3) ** 2, "D2": (1.0 + 0.1 - 5) ** 2,
                        "D3": (1.5 + 0.1 - 7.2) ** 2})
    rc, out, err = run_cli("eval", str(f), "-o", str(tmp_path / "e.xlsx"))
    assert rc == 0, err
    assert "1 formula cells kept their cached values: circular reference, iterative calculation off (model!H1)" in err
    s = read_workbook(tmp_path / "e.xlsx").sheets["model"]
    assert (s.values.get((1, 8)), s.values.get((2, 8))) == (7.0, 70.0)
    rc, out, err = run_cli("verify", str(f))
    assert rc == 0, out + err
    assert "not recomputed (kept their cached values, not checked): circular reference, iterative calculation off " \
           "(model!H1)" in out
    assert "verify: passed" in out
    rc, out, err = run_cli("inspect", str(f))
    assert rc == 0, err
    assert "circular  model!H1: iterative calculation is off: kept as their cached values" in out
    rc, out, err = run_cli("train", str(f), "--steps", "5", "-o", str(tmp_path / "t.xlsx"))
    assert rc == 0, err
    rc, out, err = run_cli("eval", str(f), "-o", str(tmp_path / "strict.xlsx"), "--strict")
    assert rc == 2 and "circular reference" in err and "model!H1" in err


def test_verify_takes_an_iterated_cycle_as_its_state(tmp_path):
    """Iteration on: each recalculation moves a counter, so verify checks the cells that read it
    against its cached value and lists it as not recomputed; eval moves it."""
    f = with_cached(book(tmp_path / "c.xlsx", {"A1": "=A1+1", "B1": "=A1*10", "C1": "=B1+1"}),
                    {"A1": 5.0, "B1": 50.0, "C1": 51.0})
    rc, out, err = run_cli("verify", str(f))
    assert rc == 0, out + err
    assert "2 cells" in out and "circular reference, iterated on each recalculation" in out and "model!A1" in out
    f2 = with_cached(book(tmp_path / "d.xlsx", {"A1": "=A1+1", "B1": "=A1*10", "C1": "=B1+1"}),
                     {"A1": 5.0, "B1": 50.0, "C1": 52.0})
    rc, out, err = run_cli("verify", str(f2))
    assert rc == 1 and "model!C1" in out


@pytest.mark.parametrize("iterate", [True, False])
def test_a_model_that_depends_on_a_cycle_is_refused_naming_it(tmp_path, iterate):
    cells = {"C1": 0.5, "C2": 0.1, "A1": 1.0, "B1": 3.0, "D1": "=(A1*$C$1+$C$2-B1)^2+E1*0.5", "E1": "=D1*0.1",
             "F1": "=D1"}
    f = book(tmp_path / "m.xlsx", cells, iterate=iterate, delta=1e-9, solver=("$C$1:$C$2", "$F$1"))
    for cmd in (["train", str(f), "--steps", "2", "-o", str(tmp_path / "t.xlsx")], ["verify", str(f)],
                ["inspect", str(f)], ["export", str(f), "-o", str(tmp_path / "m.py")]):
        rc, out, err = run_cli(*cmd)
        lines = [line for line in err.splitlines() if line.startswith("xl2nn: error:")]
        assert rc == 2 and len(lines) == 1, (cmd, out, err)
        assert "the objective model!F1 depends on a circular reference through model!D1, model!E1" in lines[0]
        assert ("iterative calculation is on" if iterate else "iterative calculation is off") in lines[0]
    assert not (tmp_path / "t.xlsx").exists() and not (tmp_path / "m.py").exists()
    rc, out, err = run_cli("eval", str(f), "-o", str(tmp_path / "e.xlsx"))     # eval needs no model
    assert rc == 0, err
