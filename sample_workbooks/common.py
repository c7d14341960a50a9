"""Pieces every sample workbook shares: styles, the README sheet, tables, Excel Solver's names."""
from __future__ import annotations

import datetime

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.table import Table, TableStyleInfo
from openpyxl.worksheet.worksheet import Worksheet

BOLD = Font(bold=True)
TITLE = Font(bold=True, size=14)
PARAM_FILL = PatternFill("solid", fgColor="FFF2CC")   # the cells Solver changes: pale yellow
LOSS_FILL = PatternFill("solid", fgColor="DDEBF7")    # the cell Solver minimises: pale blue
FIXED_TIME = datetime.datetime(2025, 1, 1)            # document properties: builds do not differ by date

# Excel's Solver keeps its model in hidden sheet-scoped names. These are the values Excel 365
# writes for a GRG Nonlinear model with default options (as in the lesson's workbook);
# solver_opt, solver_adj and solver_typ are set per model.
SOLVER_OPTIONS = {
    "solver_cvg": "0.0001", "solver_drv": "1", "solver_eng": "1", "solver_est": "1",
    "solver_itr": "2147483647", "solver_mip": "2147483647", "solver_mni": "30", "solver_mrt": "0.075",
    "solver_msl": "2", "solver_neg": "2", "solver_nod": "2147483647", "solver_num": "0", "solver_nwt": "1",
    "solver_pre": "0.000001", "solver_rbv": "1", "solver_rlx": "2", "solver_rsd": "0", "solver_scl": "1",
    "solver_sho": "2", "solver_ssz": "100", "solver_tim": "2147483647", "solver_tol": "0.01",
    "solver_val": "0", "solver_ver": "3",
}


def solver_model(ws: Worksheet, objective: str, changing: str, minimise: bool = True) -> None:
    """Excel Solver's model on `ws`: minimise `objective` (e.g. '$AA$7') by changing `changing`."""
    quoted = f"'{ws.title}'" if not ws.title.isidentifier() else ws.title
    names = dict(SOLVER_OPTIONS, solver_opt=f"{quoted}!{objective}", solver_adj=f"{quoted}!{changing}",
                 solver_typ="2" if minimise else "1")
    for name in sorted(names):
        ws.defined_names[name] = DefinedName(name, attr_text=names[name], hidden=True)


def table(ws: Worksheet, name: str, ref: str) -> None:
    t = Table(displayName=name, ref=ref)
    t.tableStyleInfo = TableStyleInfo(name="TableStyleLight9", showRowStripes=True)
    ws.add_table(t)


def readme(wb: Workbook, title: str, lines: list[str]) -> Worksheet:
    """The first sheet: what the workbook is and how to run it, one paragraph per row."""
    ws = wb.create_sheet("README", 0)
    ws["A1"] = title
    ws["A1"].font = TITLE
    ws.column_dimensions["A"].width = 110
    for i, line in enumerate(lines, start=3):
        ws.cell(i, 1, line).alignment = Alignment(wrap_text=True, vertical="top")
        if line.startswith("xl2nn ") or line.startswith("python "):
            ws.cell(i, 1).font = Font(name="Consolas")
        elif line.endswith(":"):
            ws.cell(i, 1).font = BOLD
    return ws


def headers(ws: Worksheet, row: int, col: int, names: list[str], bold: bool = True) -> None:
    for j, name in enumerate(names):
        cell = ws.cell(row, col + j, name)
        if bold:
            cell.font = BOLD


def finish(wb: Workbook, active: str) -> Workbook:
    """Open on `active`; fixed document dates."""
    for ws in wb.worksheets:
        ws.sheet_view.tabSelected = ws.title == active
    wb.active = wb.sheetnames.index(active)
    wb.properties.creator = "xl2nn sample_workbooks/build.py"
    wb.properties.created = FIXED_TIME
    return wb
