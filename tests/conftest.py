"""Shared fixtures: the user's reference workbook (when ../shared is there) and builders."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference" / "titanic.xlsx"


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.exists():
        pytest.skip("../shared/reference/titanic.xlsx is not present beside the project")
    return REFERENCE


def agrees(want: object, got: object, *, same_code: bool = False) -> bool:
    """xl2nn's value of a cell against LibreOffice's: numbers to rel 1e-9 (abs 1e-12); errors
    as errors, the same code with same_code (LibreOffice writes some of Excel's codes as
    #VALUE!); anything else equal and of the same type."""
    import math

    from xl2nn.cells import CellError
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, CellError):
        return isinstance(got, CellError) and (not same_code or got.code == want.code)
    return type(got) is type(want) and got == want


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str) -> tuple[int, str, str]:
    """`xl2nn ARGS` in this process (a new interpreter costs seconds importing torch): exit code,
    stdout, stderr. The input file (args[1]) is checked to be byte-identical afterwards."""
    import contextlib
    import io

    from xl2nn import cli
    out, err = io.StringIO(), io.StringIO()
    before = sha256(Path(args[1]))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(args))
    assert sha256(Path(args[1])) == before
    return rc, out.getvalue(), err.getvalue()


def solver_workbook(path: Path, rows: list[list[object]], formulas: dict[str, str],
                    params: str, objective: str, sheet: str = "model", sense: int = 2) -> Path:
    """Write a workbook with openpyxl: data rows from A1, formulas by cell, a Solver model."""
    from openpyxl import Workbook
    from openpyxl.workbook.defined_name import DefinedName
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row, start=1):
            if v is not None:
                ws.cell(r, c, v)
    for ref, f in formulas.items():
        ws[ref] = f
    for name, text in (("solver_opt", f"{sheet}!{objective}"), ("solver_adj", f"{sheet}!{params}"),
                       ("solver_typ", str(sense))):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return path
