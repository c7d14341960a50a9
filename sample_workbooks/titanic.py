"""titanic.xlsx: the fast.ai lesson's three Titanic models (linear, nnet, mmult) on all 891 rows.

data/titanic.csv is Kaggle's Titanic training set (891 passengers), the columns the lesson uses:
Survived, Pclass, Sex, Age, SibSp, Parch, Fare, Embarked. The layout follows the lesson's workbook:
a data table from row 3 with the derived inputs as formulas, the weights in R4 onwards, the model
columns beside the table reading it through structured references.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from openpyxl import Workbook
from openpyxl.worksheet.formula import ArrayFormula
from openpyxl.worksheet.worksheet import Worksheet

from common import BOLD, LOSS_FILL, PARAM_FILL, finish, headers, readme, solver_model, table

SEED = 0
AGE_MODE, EMBARKED_MODE = 24.0, "S"        # most common values: what fast.ai's notebook fills gaps with
RAW = ["Survived", "Embarked", "Pclass", "Sex", "Age", "Fare", "SibSp", "Parch"]
DERIVED = ["Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male", "Ones"]
FEATURES = ["SibSp", "Parch", "Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male",
            "Const"]
TOP = 4                                     # first data row; headers on row 3, as in the lesson


def load_rows(csv_path: Path) -> list[list[object]]:
    """The CSV's rows in the table's column order, gaps filled (Age: 177 rows, Embarked: 2)."""
    out = []
    with open(csv_path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.append([int(r["Survived"]), r["Embarked"] or EMBARKED_MODE, int(r["Pclass"]), r["Sex"],
                        float(r["Age"]) if r["Age"] else AGE_MODE, float(r["Fare"]), int(r["SibSp"]),
                        int(r["Parch"])])
    return out


def _data(ws: Worksheet, name: str, rows: list[list[object]]) -> int:
    """The data table A3:P(3+n): raw columns, then the lesson's derived columns as formulas."""
    this = f"{name}[[#This Row],[{{}}]]"
    ws["A1"], ws["D1"] = "Data", "Max:"
    ws["A1"].font = BOLD
    ws["E1"], ws["F1"] = f"=MAX({name}[Age])", f"=MAX({name}[Fare])"
    headers(ws, 3, 1, RAW + DERIVED, bold=False)
    derived = [f"={this.format('Age')}/$E$1", f"=LOG10({this.format('Fare')}+1)",
               f"=IF({this.format('Pclass')}=1,1,0)", f"=IF({this.format('Pclass')}=2,1,0)",
               f'=IF({this.format("Embarked")}="S",1,0)', f'=IF({this.format("Embarked")}="C",1,0)',
               f'=IF({this.format("Sex")}="male",1,0)', 1]
    for i, raw in enumerate(rows):
        for j, v in enumerate(raw + derived):
            ws.cell(TOP + i, 1 + j, v)
    last = TOP + len(rows) - 1
    table(ws, name, f"A3:P{last}")
    for col, width in zip("ABCDEFGHIJKLMNOP", [9, 10, 7, 8, 6, 9, 7, 7, 8, 9, 9, 9, 9, 9, 6, 6]):
        ws.column_dimensions[col].width = width
    return last


def _weights(ws: Worksheet, row: int, col: int, values: np.ndarray) -> None:
    for i, line in enumerate(np.atleast_2d(values)):
        for j, v in enumerate(line):
            cell = ws.cell(row + i, col + j, float(v))
            cell.fill = PARAM_FILL
            cell.number_format = "0.0000"


def _loss(ws: Worksheet, label: str, cell: str, formula: str) -> None:
    ws[label] = "Total loss:"
    ws[cell] = formula
    ws[label].font = ws[cell].font = BOLD
    ws[cell].fill = LOSS_FILL


def linear(wb: Workbook, rows: list[list[object]], w: np.ndarray) -> None:
    ws = wb.create_sheet("linear")
    name = "Table_linear"
    last = _data(ws, name, rows)
    ws["R1"], ws["AC1"] = "Params", "Model"
    headers(ws, 3, 18, FEATURES)                                  # R3:AA3
    _weights(ws, 4, 18, w)                                        # R4:AA4
    headers(ws, 3, 29, ["Linear", "Loss"])                        # AC3:AD3
    for r in range(TOP, last + 1):
        ws[f"AC{r}"] = f"=SUMPRODUCT({name}[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)"
        ws[f"AD{r}"] = f"=(AC{r}-{name}[[#This Row],[Survived]])^2"
    _loss(ws, "Z7", "AA7", f"=AVERAGE(AD{TOP}:AD{last})")
    solver_model(ws, "$AA$7", "$R$4:$AA$4")


def nnet(wb: Workbook, rows: list[list[object]], w: np.ndarray) -> None:
    ws = wb.create_sheet("nnet")
    name = "Table_nnet"
    last = _data(ws, name, rows)
    ws["R1"], ws["AC1"] = "Params", "Model"
    headers(ws, 3, 18, FEATURES)
    _weights(ws, 4, 18, w)                                        # R4:AA5, one row per unit
    headers(ws, 3, 29, ["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss"])   # AC3:AH3
    for r in range(TOP, last + 1):
        ws[f"AC{r}"] = f"=SUMPRODUCT({name}[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)"
        ws[f"AD{r}"] = f"=SUMPRODUCT({name}[[#This Row],[SibSp]:[Ones]],$R$5:$AA$5)"
        ws[f"AE{r}"] = f"=IF(AC{r}<0,0,AC{r})"
        ws[f"AF{r}"] = f"=IF(AD{r}<0,0,AD{r})"
        ws[f"AG{r}"] = f"=AE{r}+AF{r}"
        ws[f"AH{r}"] = f"=({name}[[#This Row],[Survived]]-AG{r})^2"
    _loss(ws, "AG1", "AH1", f"=AVERAGE(AH{TOP}:AH{last})")
    solver_model(ws, "$AH$1", "$R$4:$AA$5")


def mmult(wb: Workbook, rows: list[list[object]], w: np.ndarray) -> None:
    ws = wb.create_sheet("mmult")
    name = "Table_mmult"
    last = _data(ws, name, rows)
    ws["R1"], ws["V1"] = "Params", "Model"
    headers(ws, 3, 18, ["Column", "Param1", "Param2"])            # R3:T3
    for i, f in enumerate(FEATURES):
        ws.cell(4 + i, 18, f)
    _weights(ws, 4, 19, w.T)                                      # S4:T13, one column per unit
    headers(ws, 3, 22, ["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss"])   # V3:AA3
    # One Ctrl+Shift+Enter formula for the whole block of both units, as in the lesson.
    ws[f"V{TOP}"] = ArrayFormula(f"V{TOP}:W{last}", f"=MMULT({name}[[SibSp]:[Ones]],$S$4:$T$13)")
    for r in range(TOP, last + 1):
        ws[f"X{r}"] = f"=IF(V{r}<0,0,V{r})"
        ws[f"Y{r}"] = f"=IF(W{r}<0,0,W{r})"
        ws[f"Z{r}"] = f"=X{r}+Y{r}"
        ws[f"AA{r}"] = f"=({name}[[#This Row],[Survived]]-Z{r})^2"
    _loss(ws, "Z1", "AA1", f"=AVERAGE(AA{TOP}:AA{last})")
    solver_model(ws, "$AA$1", "$S$4:$T$13")


README = [
    "The fast.ai lesson's Titanic models, on all 891 passengers of Kaggle's Titanic training set "
    "(sample_workbooks/data/titanic.csv). Missing Age (177 rows) is filled with the most common age, 24, "
    "and missing Embarked (2 rows) with S, as in fast.ai's notebook.",
    "Inputs (columns I:P of each sheet's table): Age_N = Age / max Age, log_Fare = LOG10(Fare+1), one-hot "
    "Pclass_1, Pclass_2, Embark_S, Embark_C and Male, and Ones for the constant term. The target is Survived.",
    "Sheets:",
    "linear: one SUMPRODUCT of a row's inputs with the weights R4:AA4; squared error; Total loss (AA7) "
    "is the mean.",
    "nnet: two SUMPRODUCT units (weights R4:AA5), each through a ReLU written IF(x<0,0,x), summed; "
    "squared error; Total loss in AH1.",
    "mmult: the same network as one MMULT array formula (Ctrl+Shift+Enter) over the whole input block "
    "times the 10×2 weights S4:T13; Total loss in AA1. It starts from nnet's weights, so both show the "
    "same loss.",
    "Each model sheet has an Excel Solver model (Data > Solver): minimise the Total loss by changing the "
    "yellow weight cells. The weights start random (uniform in [-0.5, 0.5), seed 0), not at Solver's "
    "optimum, so there is something to train.",
    "Try it (from the project folder):",
    "xl2nn inspect sample_workbooks/titanic.xlsx",
    "xl2nn verify sample_workbooks/titanic.xlsx",
    "xl2nn train sample_workbooks/titanic.xlsx",
    "Without --sheet, xl2nn uses the Solver model of the sheet the workbook opens on (nnet), as Excel's "
    "Solver dialog does; add --sheet linear or --sheet mmult for the others. train writes "
    "titanic.trained.xlsx beside the input: the trained weights, every cell recalculated, and a sgd_steps "
    "sheet with one row per step and a chart of the loss.",
    "The cached values in this file were computed by LibreOffice (the build recalculates it headless), so "
    "xl2nn verify compares xl2nn's engine with one it did not write. Built by sample_workbooks/build.py; "
    "do not edit by hand, rebuild.",
]


def build(csv_path: Path) -> Workbook:
    rows = load_rows(csv_path)
    rng = np.random.default_rng(SEED)
    w_linear = rng.uniform(-0.5, 0.5, size=10)
    w_net = rng.uniform(-0.5, 0.5, size=(2, 10))
    wb = Workbook()
    wb.remove(wb.active)
    linear(wb, rows, w_linear)
    nnet(wb, rows, w_net)
    mmult(wb, rows, w_net)
    readme(wb, "titanic.xlsx: the fast.ai lesson's linear model and neural net in a spreadsheet", README)
    return finish(wb, active="nnet")
