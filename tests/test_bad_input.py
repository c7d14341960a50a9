"""Every command on every kind of bad workbook: one line naming the problem, exit 2, the input
byte-identical, no output file left, well inside 30 s (and, for the bombs, 2 GB)."""
from __future__ import annotations

import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from xl2nn import cli

from .conftest import sha256, solver_workbook

LIMIT_S = 30


def good(path: Path) -> Path:
    rows = [[1.0, 3.0, 0.5], [2.0, 5.0, 0.2], [3.0, 7.0, None]]
    formulas = {f"D{r}": f"=(A{r}*$C$1+$C$2-B{r})^2" for r in (1, 2, 3)}
    formulas["E1"] = "=AVERAGE(D1:D3)"
    return solver_workbook(path, rows, formulas, params="$C$1:$C$2", objective="$E$1")


def rezip(src: Path, dst: Path, change) -> Path:
    """Copy a workbook's zip, letting `change(name, data)` return new bytes for a part."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))
    return dst


SHEET = "xl/worksheets/sheet1.xml"


def declared_bomb(tmp: Path) -> Path:
    """A sheet whose zip entry says it inflates to 3.5 GB."""
    f = good(tmp / "src.xlsx")
    data = bytearray(f.read_bytes())
    name = SHEET.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:                       # central directory entry of the sheet: size at +24
        n = struct.unpack("<H", data[pos + 28:pos + 30])[0]
        if data[pos + 46:pos + 46 + n] == name:
            data[pos + 24:pos + 28] = struct.pack("<I", 3_500_000_000)
            break
        pos = data.find(b"PK\x01\x02", pos + 4)
    out = tmp / "bomb.xlsx"
    out.write_bytes(bytes(data))
    return out


def lying_bomb(tmp: Path) -> Path:
    """A sheet entry that says 2 KB but inflates to 200 MB of XML."""
    f = good(tmp / "src.xlsx")
    out = tmp / "lying.xlsx"
    with zipfile.ZipFile(f) as zin:
        sheet = zin.read(SHEET)
    filler = b"<!--" + b" " * (200 << 20) + b"-->"
    big = sheet.replace(b"<sheetData>", filler + b"<sheetData>", 1)
    rezip(f, out, lambda n, d: big if n == SHEET else d)
    data = bytearray(out.read_bytes())
    for sig, off in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        pos = data.find(sig)
        while pos != -1:
            n_at = 28 if sig == b"PK\x01\x02" else 26
            n = struct.unpack("<H", data[pos + n_at:pos + n_at + 2])[0]
            start = pos + (46 if sig == b"PK\x01\x02" else 30)
            if data[start:start + n] == SHEET.encode():
                data[pos + off:pos + off + 4] = struct.pack("<I", 2048)
            pos = data.find(sig, pos + 4)
    out.write_bytes(bytes(data))
    return out


def entity_bomb(tmp: Path) -> Path:
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
                      for i in range(1, 10)) + b"]>")
    f = good(tmp / "src.xlsx")
    return rezip(f, tmp / "entities.xlsx",
                 lambda n, d: lol + d.split(b"?>", 1)[-1].replace(b"<sheetData>", b"<sheetData>&lol9;", 1)
                 if n == SHEET else d)


def error_input(tmp: Path) -> Path:
    """A #DIV/0! in a data cell the objective reads."""
    rows = [[1.0, 3.0, 0.5], [2.0, None, 0.2], [3.0, 7.0, None]]
    formulas = {f"D{r}": f"=(A{r}*$C$1+$C$2-B{r})^2" for r in (1, 2, 3)}
    formulas["B2"] = "=1/0"
    formulas["E1"] = "=AVERAGE(D1:D3)"
    return solver_workbook(tmp / "errors.xlsx", rows, formulas, params="$C$1:$C$2", objective="$E$1")


def text_input(tmp: Path) -> Path:
    rows = [[1.0, 3.0, 0.5], [2.0, "five", 0.2], [3.0, 7.0, None]]
    formulas = {f"D{r}": f"=(A{r}*$C$1+$C$2-B{r})^2" for r in (1, 2, 3)}
    formulas["E1"] = "=AVERAGE(D1:D3)"
    return solver_workbook(tmp / "text.xlsx", rows, formulas, params="$C$1:$C$2", objective="$E$1")


def circular(tmp: Path) -> Path:
    """The Solver objective on a cycle, iterative calculation off: every command that needs the
    model refuses it naming the cycle's cells; eval computes the rest and lists the cycle, as
    verify does for a cycle beside a model (tests/test_iterative.py)."""
    formulas = {"D1": "=(A1*$C$1+$C$2-B1)^2+E1", "E1": "=D1/2"}
    return solver_workbook(tmp / "loop.xlsx", [[1.0, 3.0, 0.5], [None, None, 0.2]], formulas,
                           params="$C$1:$C$2", objective="$E$1")


def unsupported(tmp: Path) -> Path:
    formulas = {"D1": "=BESSELJ(A1*$C$1,1)+$C$2", "E1": "=D1^2"}
    return solver_workbook(tmp / "bessel.xlsx", [[1.0, 3.0, 0.5], [None, None, 0.2]], formulas,
                           params="$C$1:$C$2", objective="$E$1")


def no_model(tmp: Path) -> Path:
    from openpyxl import Workbook
    wb = Workbook()
    wb.active["A1"], wb.active["A2"] = 1, "=A1*2"
    wb.save(tmp / "plain.xlsx")
    return tmp / "plain.xlsx"


def raw(name: str, content: bytes):
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name
    return make


def not_a_workbook(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "notes.xlsx", "w") as z:
        z.writestr("hello.txt", "hi")
    return tmp / "notes.xlsx"


OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
CASES = {
    "empty": (raw("empty.xlsx", b""), "empty"),
    "random bytes": (raw("random.xlsx", bytes(range(256)) * 40), "not an .xlsx workbook"),
    "zip, not a workbook": (not_a_workbook, "not an Excel workbook"),
    "legacy .xls": (raw("old.xls", OLE), "save it as .xlsx"),
    "password-protected": (raw("secret.xlsx", OLE), "password-protected"),
    ".xlsb": (raw("binary.xlsb", b"PK\x03\x04" + b"\x00" * 100), "save it as .xlsx"),
    "zip bomb (declared)": (declared_bomb, "would inflate to 3,500,000,000 bytes"),
    "zip bomb (lying header)": (lying_bomb, "damaged"),
    "XML entity bomb": (entity_bomb, "entity bomb"),
    "circular reference": (circular, "depends on a circular reference through model!D1, model!E1"),
    "unsupported function": (unsupported, "BESSELJ"),
    "no model": (no_model, "no Excel Solver model"),
    "error value in an input": (error_input, "model!B2"),
    "text in a numeric input": (text_input, "model!B2"),
}
COMMANDS = ["inspect", "verify", "eval", "train", "export", "import-weights"]


def command(name: str, src: Path, tmp: Path) -> tuple[list[str], Path]:
    out = tmp / f"out_{name}.xlsx"
    if name == "export":
        out = tmp / "out.py"
        return ["export", str(src), "-o", str(out)], out
    if name == "import-weights":
        torch.save({"model_C1_C2": torch.zeros(2, 1, dtype=torch.float64)}, tmp / "w.pt")
        return ["import-weights", str(src), str(tmp / "w.pt"), "-o", str(out)], out
    if name in ("eval", "train"):
        return [name, str(src), "-o", str(out)] + (["--steps", "2"] if name == "train" else []), out
    return [name, str(src)], out


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_answers_bad_input_in_one_line(case, tmp_path, capsys):
    make, words = CASES[case]
    src = make(tmp_path)
    before = sha256(src)
    files_before = set(tmp_path.iterdir())
    for name in COMMANDS:
        if case in ("circular reference", "unsupported function", "error value in an input",
                    "text in a numeric input", "no model") and name == "eval":
            continue             # eval computes what it can and lists the rest (tested elsewhere)
        if case == "no model" and name in ("inspect", "verify"):
            continue             # they need no model (tests/test_inspect.py, tests/test_any_workbook.py)
        args, out = command(name, src, tmp_path)
        t = time.perf_counter()
        rc = cli.main(args)
        took = time.perf_counter() - t
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert rc == 2, (case, name, err)
        assert lines and lines[-1].startswith("xl2nn: error:") and len(
            [line for line in lines if line.startswith("xl2nn: error:")]) == 1, (case, name, err)
        assert words in lines[-1] and src.name in lines[-1], (case, name, lines[-1])
        assert "Traceback" not in err
        assert took < LIMIT_S, (case, name, took)
        assert sha256(src) == before
        assert not out.exists()
        leftovers = set(tmp_path.iterdir()) - files_before - {tmp_path / "w.pt"}
        assert not leftovers, (case, name, leftovers)


@pytest.mark.parametrize("make", [declared_bomb, lying_bomb, entity_bomb])
def test_bombs_stay_inside_2gb(make, tmp_path):
    """In a process whose address space is capped at 2 GB, the answer is still the one line."""
    src = make(tmp_path)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from xl2nn.reader import read_workbook; from xl2nn.errors import BadInput\n"
            f"try:\n read_workbook({str(src)!r})\nexcept BadInput as e:\n print('BadInput', e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=LIMIT_S)
    assert r.returncode == 0 and r.stdout.startswith("BadInput"), (r.stdout, r.stderr[-500:])


def test_output_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    """Tests run as root, whom file modes do not stop: the refusal is simulated where it happens."""
    import tempfile
    src = good(tmp_path / "good.xlsx")

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    for args, out in ((["train", str(src), "--steps", "2", "-o", str(tmp_path / "t.xlsx")], tmp_path / "t.xlsx"),
                      (["eval", str(src), "-o", str(tmp_path / "e.xlsx")], tmp_path / "e.xlsx"),
                      (["export", str(src), "-o", str(tmp_path / "m.py")], tmp_path / "m.py")):
        rc = cli.main(args)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("xl2nn: error:") and "permission denied" in err, (args, err)
        assert len(err.splitlines()) == 1 and not out.exists()
    # and a folder that is a file
    rc = cli.main(["train", str(src), "-o", str(src / "x.xlsx")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_volatile_cells_are_snapshots_with_a_warning(tmp_path, capsys):
    rows = [[1.0, None, 3.0, 0.5], [2.0, None, 5.0, 0.2], [3.0, None, 7.0, None]]
    formulas = {f"B{r}": "=NOW()*0" for r in (1, 2, 3)}     # (RAND read by a model is dropout: test_dropout.py)
    formulas.update({f"E{r}": f"=(A{r}*$D$1+$D$2+B{r}-C{r})^2" for r in (1, 2, 3)})
    formulas["F1"] = "=AVERAGE(E1:E3)"
    src = solver_workbook(tmp_path / "vol.xlsx", rows, formulas, params="$D$1:$D$2", objective="$F$1")
    rc = cli.main(["train", str(src), "--steps", "300", "--lr", "0.05", "-o", str(tmp_path / "t.xlsx")])
    err = capsys.readouterr().err
    assert rc == 0
    assert "volatile" in err and "NOW in model!B1:B3" in err and "cached values" in err
    # With a RAND that depends on the parameters the model cannot be compiled.
    formulas["B1"] = "=RAND()*$D$1"
    src = solver_workbook(tmp_path / "vol2.xlsx", rows, formulas, params="$D$1:$D$2", objective="$F$1")
    rc = cli.main(["verify", str(src)])
    err = capsys.readouterr().err
    assert rc == 2 and "RAND (volatile, and it depends on the parameters)" in err
