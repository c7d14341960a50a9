"""Write a titanic-style `nnet` workbook with N data rows, as Excel (or another writer) would save it.

Per row: a 0/1 target (A), ten inputs (G:P, P = 1 for the bias), two SUMPRODUCTs against the
2×10 weight block R4:AA5, two IF-ReLUs, their sum and a squared error (AC:AH); AH1 averages
the errors and a hidden Solver model minimises AH1 by changing R4:AA5. Copied formulas are
stored as Excel stores them — one shared-formula master per column plus children — and every
formula cell carries its cached value (computed here with NumPy), so the file reads like one
Excel saved. The same model can be written as other authors' tools write it (`--flavour`):

  excel                 one shared-formula master per column, cached values (the default)
  openpyxl              openpyxl's Workbook: formula text per cell, no cached values
  openpyxl-write-only   openpyxl's write_only mode: the same, streamed, inline strings
  xlsxwriter            XlsxWriter (constant_memory): formula text per cell with its cached value,
                        inline strings
  libreoffice           the Excel-style file opened and saved by headless LibreOffice
                        (formula text per cell, <f aca="false">, t="n"); needs soffice

The workbook is generated, never committed:

    python benchmarks/big_workbook.py OUT.xlsx [--rows 100000] [--seed 0] [--flavour excel]
"""
from __future__ import annotations

import argparse
import zipfile
from xml.sax.saxutils import escape
from pathlib import Path

import numpy as np

from xl2nn.cells import col_number

FIRST = 4   # first data row
INPUTS = ["SibSp", "Parch", "Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male", "Ones"]
IN_COLS = ["G", "H", "I", "J", "K", "L", "M", "N", "O", "P"]
W_COLS = ["R", "S", "T", "U", "V", "W", "X", "Y", "Z", "AA"]

_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">\
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>\
<Default Extension="xml" ContentType="application/xml"/>\
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>\
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>\
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>\
</Types>"""
_ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">\
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" \
Target="xl/workbook.xml"/></Relationships>"""
_WB_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">\
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" \
Target="worksheets/sheet1.xml"/>\
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" \
Target="styles.xml"/></Relationships>"""
_STYLES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">\
<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>\
<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>\
<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>\
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>\
<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>\
<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>"""

SOLVER = {"solver_adj": "nnet!$R$4:$AA$5", "solver_opt": "nnet!$AH$1", "solver_typ": "2", "solver_val": "0",
          "solver_eng": "1", "solver_neg": "2", "solver_num": "0", "solver_ver": "3"}

FLAVOURS = ("excel", "openpyxl", "openpyxl-write-only", "xlsxwriter", "libreoffice")
FORMULAS = [("AC", "SUMPRODUCT($G{r}:$P{r},$R$4:$AA$4)"), ("AD", "SUMPRODUCT($G{r}:$P{r},$R$5:$AA$5)"),
            ("AE", "IF(AC{r}<0,0,AC{r})"), ("AF", "IF(AD{r}<0,0,AD{r})"), ("AG", "AE{r}+AF{r}"),
            ("AH", "($A{r}-AG{r})^2")]
# --broken: the first hidden unit multiplies a row by a column, #VALUE! in Excel, and the
# error reaches the objective through the ReLU, the prediction and the loss
BROKEN = "SUMPRODUCT($G{r}:$P{r},$R$4:$R$13)"
ERROR_COLS = (0, 2, 4, 5)
HEADERS = ["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss"]


def data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets (rows,), inputs (rows, 10) and weights (2, 10), titanic-like in range."""
    rng = np.random.default_rng(seed)
    x = np.empty((rows, 10))
    x[:, 0] = rng.integers(0, 4, rows)
    x[:, 1] = rng.integers(0, 3, rows)
    x[:, 2] = rng.uniform(0, 1, rows).round(4)
    x[:, 3] = np.log10(1 + rng.exponential(30, rows)).round(6)
    pclass = rng.integers(1, 4, rows)
    x[:, 4] = pclass == 1
    x[:, 5] = pclass == 2
    port = rng.integers(0, 3, rows)
    x[:, 6] = port == 0
    x[:, 7] = port == 1
    x[:, 8] = rng.integers(0, 2, rows)
    x[:, 9] = 1
    y = (rng.uniform(size=rows) < 0.38).astype(float)
    w = rng.uniform(-0.5, 0.5, (2, 10)).round(6)
    return y, x, w


def _num(v: float) -> str:
    return repr(float(v)).removesuffix(".0") if float(v).is_integer() else repr(float(v))


def formulas(broken: bool = False) -> list[tuple[str, str]]:
    return [(FORMULAS[0][0], BROKEN)] + FORMULAS[1:] if broken else FORMULAS


def _value(v: float) -> str:
    """The cell's type attribute for a cached value (NaN stands for #VALUE!)."""
    return '' if v == v else ' t="e"'


def sheet_xml(y: np.ndarray, x: np.ndarray, w: np.ndarray, broken: bool = False) -> bytes:
    n = len(y)
    last = FIRST + n - 1
    cached_values, loss = cached(y, x, w, broken)
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
           '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
           f'<dimension ref="A1:AH{last}"/><sheetViews><sheetView tabSelected="1" workbookViewId="0"/>'
           '</sheetViews><sheetFormatPr defaultRowHeight="15"/><sheetData>'
           '<row r="1"><c r="AG1" t="inlineStr"><is><t>Total loss:</t></is></c>'
           f'<c r="AH1"{_value(loss)}><f>AVERAGE(AH{FIRST}:AH{last})</f><v>{_text(loss)}</v></c></row>'
           '<row r="3"><c r="A3" t="inlineStr"><is><t>Survived</t></is></c>']
    out += [f'<c r="{c}3" t="inlineStr"><is><t>{name}</t></is></c>' for c, name in zip(IN_COLS, INPUTS)]
    out += [f'<c r="{c}3" t="inlineStr"><is><t>{name}</t></is></c>' for c, name in zip(W_COLS, INPUTS)]
    out += [f'<c r="{c}3" t="inlineStr"><is><t>{h}</t></is></c>'
            for c, h in zip(["AC", "AD", "AE", "AF", "AG", "AH"], HEADERS)]
    out.append("</row>")
    xs = [[_num(v) for v in col] for col in x.T]
    fs = [[_text(v) for v in col.tolist()] for col in cached_values]
    ys = [_num(v) for v in y]
    for i in range(n):
        r = FIRST + i
        cells = [f'<row r="{r}"><c r="A{r}"><v>{ys[i]}</v></c>']
        cells += [f'<c r="{c}{r}"><v>{xs[j][i]}</v></c>' for j, c in enumerate(IN_COLS)]
        if i < 2:
            cells += [f'<c r="{c}{r}"><v>{_num(w[i, j])}</v></c>' for j, c in enumerate(W_COLS)]
        for k, (c, text) in enumerate(formulas(broken)):
            if i == 0:
                f = f'<f t="shared" ref="{c}{FIRST}:{c}{last}" si="{k}">{escape(text.format(r=r))}</f>'
            else:
                f = f'<f t="shared" si="{k}"/>'
            cells.append(f'<c r="{c}{r}"{_value(cached_values[k][i])}>{f}<v>{fs[k][i]}</v></c>')
        cells.append("</row>")
        out.append("".join(cells))
    out.append("</sheetData></worksheet>")
    return "".join(out).encode()


def workbook_xml() -> bytes:
    names = "".join(f'<definedName name="{k}" localSheetId="0" hidden="1">{v}</definedName>'
                    for k, v in sorted(SOLVER.items()))
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<bookViews><workbookView activeTab="0"/></bookViews>'
            '<sheets><sheet name="nnet" sheetId="1" r:id="rId1"/></sheets>'
            f'<definedNames>{names}</definedNames><calcPr calcId="191029"/></workbook>').encode()


def _text(v: float) -> str:
    return repr(float(v)) if v == v else "#VALUE!"


def cached(y: np.ndarray, x: np.ndarray, w: np.ndarray, broken: bool = False) -> tuple[list[np.ndarray], float]:
    """Each formula column's values, and the loss, as Excel computes them (NaN: #VALUE!)."""
    lin = x @ w.T
    if broken:
        lin[:, 0] = np.nan
    relu = np.where(lin < 0, 0, lin)
    pred = relu.sum(axis=1)
    err = (y - pred) ** 2
    return [lin[:, 0], lin[:, 1], relu[:, 0], relu[:, 1], pred, err], float(err.mean())


def write(path: str | Path, rows: int, seed: int = 0, flavour: str = "excel", broken: bool = False) -> Path:
    """Write the workbook to `path` as `flavour` (see FLAVOURS) saves it."""
    if flavour != "excel":
        return _write_other(Path(path), rows, seed, flavour, broken)
    y, x, w = data(rows, seed)
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _ROOT_RELS)
        zf.writestr("xl/workbook.xml", workbook_xml())
        zf.writestr("xl/_rels/workbook.xml.rels", _WB_RELS)
        zf.writestr("xl/styles.xml", _STYLES)
        zf.writestr("xl/worksheets/sheet1.xml", sheet_xml(y, x, w, broken))
    return path


def _rows(y: np.ndarray, x: np.ndarray, w: np.ndarray, broken: bool = False):
    """The sheet row by row as (row number, [(column letters, value or '=formula')]), with the
    cached value of each formula cell beside it: what a cell-by-cell writer is given."""
    n = len(y)
    values, loss = cached(y, x, w, broken)
    last = FIRST + n - 1
    yield 1, [("AG", "Total loss:", None), ("AH", f"=AVERAGE(AH{FIRST}:AH{last})", loss)]
    yield 3, [("A", "Survived", None)] + [(c, h, None) for c, h in zip(IN_COLS, INPUTS)] + \
        [(c, h, None) for c, h in zip(W_COLS, INPUTS)] + \
        [(c, h, None) for c, h in zip(["AC", "AD", "AE", "AF", "AG", "AH"], HEADERS)]
    for i in range(n):
        r = FIRST + i
        cells = [("A", float(y[i]), None)] + [(c, float(x[i, j]), None) for j, c in enumerate(IN_COLS)]
        if i < 2:
            cells += [(c, float(w[i, j]), None) for j, c in enumerate(W_COLS)]
        cells += [(c, "=" + text.format(r=r), _text(values[k][i]) if values[k][i] != values[k][i] else values[k][i])
                  for k, (c, text) in enumerate(formulas(broken))]
        yield r, cells


def _write_other(path: Path, rows: int, seed: int, flavour: str, broken: bool) -> Path:
    y, x, w = data(rows, seed)
    if flavour == "libreoffice":
        import shutil
        import subprocess
        import tempfile
        soffice = shutil.which("soffice") or shutil.which("libreoffice")
        if soffice is None:
            raise RuntimeError("the libreoffice flavour needs soffice on PATH")
        with tempfile.TemporaryDirectory(prefix="xl2nn-lo-save-") as tmp:
            src = Path(tmp) / path.name
            write(src, rows, seed, broken=broken)
            out = Path(tmp) / "out"
            subprocess.run([soffice, f"-env:UserInstallation=file://{tmp}/profile", "--headless",
                            "--convert-to", "xlsx:Calc MS Excel 2007 XML", "--outdir", str(out), str(src)],
                           check=True, capture_output=True, timeout=3600)
            shutil.move(out / path.name, path)
        return path
    if flavour in ("openpyxl", "openpyxl-write-only"):
        import openpyxl
        from openpyxl.workbook.defined_name import DefinedName
        wb = openpyxl.Workbook(write_only=flavour == "openpyxl-write-only")
        ws = wb.create_sheet("nnet") if wb.write_only else wb.active
        ws.title = "nnet"
        if wb.write_only:
            written = 0
            for r, cells in _rows(y, x, w, broken):
                line = [None] * max(col_number(c) for c, _, _ in cells)
                for c, v, _ in cells:
                    line[col_number(c) - 1] = v
                for _ in range(r - 1 - written):     # the empty row 2
                    ws.append([])
                ws.append(line)
                written = r
        else:
            for r, cells in _rows(y, x, w, broken):
                for c, v, _ in cells:
                    ws.cell(r, col_number(c), v)
        for k, v in SOLVER.items():
            ws.defined_names[k] = DefinedName(k, attr_text=v, hidden=True)
        wb.save(path)
        return path
    if flavour == "xlsxwriter":
        import xlsxwriter
        book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
        ws = book.add_worksheet("nnet")
        for r, cells in _rows(y, x, w, broken):
            for c, v, value in cells:
                if isinstance(v, str) and v.startswith("="):
                    ws.write_formula(r - 1, col_number(c) - 1, v, None, value)
                else:
                    ws.write(r - 1, col_number(c) - 1, v)
        for k, v in SOLVER.items():
            book.define_name(f"nnet!{k}", "=" + v if "!" in v else v)
        book.close()
        return path
    raise ValueError(f"unknown flavour {flavour!r}; one of {', '.join(FLAVOURS)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flavour", choices=FLAVOURS, default="excel")
    ap.add_argument("--broken", action="store_true", help="a #VALUE! (row times column) that reaches the objective")
    args = ap.parse_args()
    p = write(args.out, args.rows, args.seed, args.flavour, args.broken)
    print(f"{p}: {args.rows:,} rows, {p.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
