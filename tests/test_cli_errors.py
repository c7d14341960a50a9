"""Bad input gets one clear line and exit code 2; the input is never touched."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from .conftest import sha256, solver_workbook


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xl2nn.cli", *args], capture_output=True, text=True)


def _assert_one_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xl2nn: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize("content,words", [
    (b"", ["empty"]),
    (b"\x00\x01garbage" * 50, ["not an .xlsx"]),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, ["legacy .xls", "save it as .xlsx"]),
])
def test_unreadable_files(tmp_path, content, words):
    f = tmp_path / "bad.xlsx"
    f.write_bytes(content)
    before = sha256(f)
    for cmd in (["inspect", str(f)], ["verify", str(f)], ["eval", str(f), "-o", str(tmp_path / "o.xlsx")]):
        _assert_one_line(run(*cmd), "bad.xlsx", *words)
    assert sha256(f) == before
    assert not (tmp_path / "o.xlsx").exists()


def test_zip_that_is_not_a_workbook(tmp_path):
    f = tmp_path / "notes.xlsx"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("hello.txt", "hi")
    _assert_one_line(run("inspect", str(f)), "notes.xlsx", "not an Excel workbook")


def test_missing_file(tmp_path):
    _assert_one_line(run("inspect", str(tmp_path / "nope.xlsx")), "no such file")


def test_no_model_lists_sheets_and_flags(tmp_path):
    f = tmp_path / "plain.xlsx"
    from openpyxl import Workbook
    wb = Workbook()
    wb.active.title = "data"
    wb.active["A1"] = 1
    wb.active["A2"] = "=A1*2"
    wb.save(f)
    r = run("inspect", str(f))              # inspect needs no model: it says how to give one
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "sheet     data: 1 formula family" in r.stdout
    assert "model     no Solver model: give --params RANGE --loss CELL to compile one" in r.stdout
    r = run("inspect", str(f), "--params", "A1", "--loss", "A2", "--json")
    assert r.returncode == 0, r.stderr


def test_unsupported_function_is_named_with_cells(tmp_path):
    f = solver_workbook(tmp_path / "m.xlsx", [[1.0, 2.0]], {"C1": "=A1*B1", "D1": "=GAMMALN(C1)+FOOBAR(C1)",
                                                             "E1": "=D1"}, "A1", "E1")
    _assert_one_line(run("inspect", str(f)), "FOOBAR", "GAMMALN", "model!D1")


def test_circular_reference_is_named(tmp_path):
    f = solver_workbook(tmp_path / "m.xlsx", [[1.0]], {"B1": "=A1+C1", "C1": "=B1*2", "D1": "=C1"}, "A1", "D1")
    _assert_one_line(run("inspect", str(f)), "circular reference", "model!B1", "model!C1")


def test_parameter_cell_holding_text(tmp_path):
    f = solver_workbook(tmp_path / "m.xlsx", [["oops", 2.0]], {"C1": "=A1*B1"}, "A1", "C1")
    _assert_one_line(run("inspect", str(f)), "model!A1", "not a number")


def test_eval_refuses_to_overwrite_its_input(tmp_path):
    f = solver_workbook(tmp_path / "m.xlsx", [[1.0, 2.0]], {"C1": "=A1*B1"}, "A1", "C1")
    before = sha256(f)
    _assert_one_line(run("eval", str(f), "-o", str(f)), "new file")
    assert sha256(f) == before


def test_eval_computes_what_it_can_and_lists_the_rest(tmp_path):
    """Cells using unimplemented functions keep their cached values, listed in one warning
    by function; the cells that read them are computed from those values. --strict: exit 2."""
    import json

    from .libreoffice import find_soffice
    from xl2nn.reader import read_workbook
    from openpyxl import Workbook
    wb = Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 5):
        ws[f"A{r}"] = r
        ws[f"B{r}"] = f"=BESSELJ(A{r},1)"            # unsupported, copied down: one range
        ws[f"C{r}"] = f"=B{r}*2+A{r}"                # supported, reads the unsupported cells
    ws["D1"] = "=ERFC(A1)"
    ws["D2"] = "=RAND()"
    src = tmp_path / "partial.xlsx"
    wb.save(src)
    if find_soffice() is not None:                   # give the file real cached values
        from .libreoffice import recalculate
        recalculate(src, tmp_path / "cached.xlsx")
        src = tmp_path / "cached.xlsx"
    cached = read_workbook(src).sheets["s"].values
    out = tmp_path / "out.xlsx"
    r = run("eval", str(src), "-o", str(out))
    rc, err = r.returncode, r.stderr
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("xl2nn: warning:")]
    assert len(warnings) == 1, err
    assert "6 formula cells kept their cached values" in warnings[0]
    assert "BESSELJ (s!B1:B4)" in warnings[0] and "ERFC (s!D1)" in warnings[0]
    assert "volatile RAND (s!D2)" in warnings[0]
    got = read_workbook(out).sheets["s"].values
    for r in range(1, 5):
        assert got[(r, 2)] == cached[(r, 2)]               # kept
        assert got[(r, 3)] == cached[(r, 2)] * 2 + r       # computed, from the kept values
    r = run("eval", str(src), "-o", str(tmp_path / "j.xlsx"), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["unsupported"] == {"BESSELJ": ["s!B1:B4"], "ERFC": ["s!D1"]}
    assert report["volatile"] == {"RAND": ["s!D2"]} and report["cells_kept"] == 6
    strict = tmp_path / "strict.xlsx"
    r = run("eval", str(src), "-o", str(strict), "--strict")
    _assert_one_line(r, "partial.xlsx" if src.name == "partial.xlsx" else "cached.xlsx", "--strict",
                     "BESSELJ (s!B1:B4), ERFC (s!D1)")
    assert not strict.exists()


@pytest.mark.parametrize("command", ["inspect", "eval", "verify", "train", "export"])
def test_a_missing_or_foreign_file_is_said_before_torch_loads(command, tmp_path):
    """The file is checked before torch is imported: the one-line error comes in a fraction of a
    second, not after the 2 s import."""
    foreign = tmp_path / "notes.xlsx"
    foreign.write_text("not a zip")
    for path, why in ((tmp_path / "missing.xlsx", "no such file"),
                      (foreign, "not an .xlsx workbook (not a zip file)")):
        code = ("import sys, xl2nn.cli as c; rc = c.main(sys.argv[1:]); "
                "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded'); sys.exit(rc)")
        out = ["-o", str(tmp_path / ("out.py" if command == "export" else "out.xlsx"))] \
            if command in ("eval", "export") else []
        r = subprocess.run([sys.executable, "-c", code, command, str(path), *out], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and r.stdout.strip() == "torch not loaded", r.stdout + r.stderr
        assert r.stderr == f"xl2nn: error: {path}: {why}\n", r.stderr
        assert not (tmp_path / "out.xlsx").exists() and not (tmp_path / "out.py").exists()


def test_python_dash_m_xl2nn_is_the_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xl2nn", "inspect", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: xl2nn inspect")
    r = subprocess.run([sys.executable, "-m", "xl2nn", "verify", str(tmp_path / "none.xlsx")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == f"xl2nn: error: {tmp_path / 'none.xlsx'}: no such file\n"
