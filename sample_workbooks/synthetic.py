"""The workbooks on synthetic data (fixed seeds): linear and softmax regression, SGD by hand,
a convolution."""
from __future__ import annotations

import numpy as np
from openpyxl import Workbook

from common import BOLD, LOSS_FILL, PARAM_FILL, finish, headers, readme, solver_model, table

RUN_LINES = "Try it (from the project folder):"
LIBREOFFICE = ("The cached values in this file were computed by LibreOffice (the build recalculates it "
               "headless), so xl2nn verify compares xl2nn's engine with one it did not write. Built by "
               "sample_workbooks/build.py; do not edit by hand, rebuild.")


def _params(ws, row: int, col: int, values) -> None:
    for j, v in enumerate(values):
        cell = ws.cell(row, col + j, float(v))
        cell.fill = PARAM_FILL
        cell.number_format = "0.0000"


def _loss(ws, label_cell: str, cell: str, label: str, formula: str) -> None:
    ws[label_cell], ws[cell] = label, formula
    ws[label_cell].font = ws[cell].font = BOLD
    ws[cell].fill = LOSS_FILL


# --------------------------------------------------------------------------- linear regression

LINEAR_SEED, LINEAR_ROWS = 1, 1000
TRUE_W, TRUE_B, NOISE = (2.0, -3.0), 0.5, 0.1


def linear_regression() -> Workbook:
    rng = np.random.default_rng(LINEAR_SEED)
    x = np.round(rng.normal(size=(LINEAR_ROWS, 2)), 4)
    y = np.round(x @ np.array(TRUE_W) + TRUE_B + rng.normal(scale=NOISE, size=LINEAR_ROWS), 4)
    start = rng.uniform(-0.5, 0.5, size=3)
    wb = Workbook()
    ws = wb.active
    ws.title = "regression"
    ws["A1"] = "y = w1·x1 + w2·x2 + b, fitted by least squares"
    ws["A1"].font = BOLD
    headers(ws, 3, 1, ["x1", "x2", "y", "pred", "sq_err"], bold=False)
    t = "Data[[#This Row],[{}]]"
    for i in range(LINEAR_ROWS):
        r = 4 + i
        ws.cell(r, 1, float(x[i, 0]))
        ws.cell(r, 2, float(x[i, 1]))
        ws.cell(r, 3, float(y[i]))
        ws.cell(r, 4, f"=$H$4*{t.format('x1')}+$I$4*{t.format('x2')}+$J$4")
        ws.cell(r, 5, f"=({t.format('pred')}-{t.format('y')})^2")
    last = 3 + LINEAR_ROWS
    table(ws, "Data", f"A3:E{last}")
    headers(ws, 3, 8, ["w1", "w2", "b"])                           # H3:J3
    ws["G4"] = "weights"
    _params(ws, 4, 8, start)                                       # H4:J4
    _loss(ws, "G6", "H6", "mean squared error", "=AVERAGE(Data[sq_err])")
    ws["G8"] = "the data's true values"
    for j, v in enumerate([*TRUE_W, TRUE_B]):
        ws.cell(8, 8 + j, v)
    ws["G9"] = f"plus noise with standard deviation {NOISE}"
    ws.column_dimensions["G"].width = 22
    solver_model(ws, "$H$6", "$H$4:$J$4")
    readme(wb, "linear_regression.xlsx: the classic first model", [
        f"{LINEAR_ROWS:,} rows of y = 2·x1 - 3·x2 + 0.5 + noise (sd {NOISE}), x1 and x2 standard normal, "
        f"generated with seed {LINEAR_SEED}. The table Data holds x1, x2, y, the prediction "
        "pred = w1·x1 + w2·x2 + b and the squared error; the mean squared error is in H6.",
        "The Excel Solver model (Data > Solver) minimises H6 by changing the yellow weights H4:J4, which start "
        "random. Least squares finds w1 ≈ 2, w2 ≈ -3, b ≈ 0.5 and a mean squared error near 0.01 (the "
        "noise's variance).",
        RUN_LINES,
        "xl2nn inspect sample_workbooks/linear_regression.xlsx",
        "xl2nn verify sample_workbooks/linear_regression.xlsx",
        "xl2nn train sample_workbooks/linear_regression.xlsx",
        LIBREOFFICE,
    ])
    return finish(wb, active="regression")


# --------------------------------------------------------------------------- softmax regression

SOFTMAX_SEED, PER_CLASS = 2, 100
CENTRES = [(0.0, 2.0), (-2.0, -1.0), (2.0, -1.0)]


def softmax_regression() -> Workbook:
    rng = np.random.default_rng(SOFTMAX_SEED)
    points = [(float(v[0]), float(v[1]), k + 1) for k, c in enumerate(CENTRES)
              for v in np.round(rng.normal(loc=c, scale=1.0, size=(PER_CLASS, 2)), 4)]
    order = rng.permutation(len(points))
    start = rng.uniform(-0.5, 0.5, size=(3, 3))
    wb = Workbook()
    ws = wb.active
    ws.title = "softmax"
    ws["A1"] = "Softmax regression: three classes from two features, cross-entropy loss"
    ws["A1"].font = BOLD
    cols = ["x1", "x2", "Ones", "class", "y1", "y2", "y3", "z1", "z2", "z3", "e1", "e2", "e3", "p1", "p2", "p3",
            "ce", "predicted", "correct"]
    headers(ws, 3, 1, cols, bold=False)
    t = "Classes[[#This Row],[{}]]".format
    for i, k in enumerate(order):
        r = 4 + i
        x1, x2, cls = points[k]
        row = [x1, x2, 1, cls]
        row += [f"=IF({t('class')}={j},1,0)" for j in (1, 2, 3)]
        row += [f"=SUMPRODUCT(Classes[[#This Row],[x1]:[Ones]],$W${3 + j}:$Y${3 + j})" for j in (1, 2, 3)]
        row += [f"=EXP({t(z)})" for z in ("z1", "z2", "z3")]
        row += [f"={t(e)}/SUM(Classes[[#This Row],[e1]:[e3]])" for e in ("e1", "e2", "e3")]
        row += [f"=-({t('y1')}*LN({t('p1')})+{t('y2')}*LN({t('p2')})+{t('y3')}*LN({t('p3')}))",
                f"=IF(AND({t('p1')}>={t('p2')},{t('p1')}>={t('p3')}),1,IF({t('p2')}>={t('p3')},2,3))",
                f"=IF({t('predicted')}={t('class')},1,0)"]
        for j, v in enumerate(row):
            ws.cell(r, 1 + j, v)
    last = 3 + len(points)
    table(ws, "Classes", f"A3:S{last}")
    headers(ws, 3, 23, ["x1", "x2", "Ones"])                       # W3:Y3
    for j in range(3):
        ws.cell(4 + j, 22, f"class {j + 1}")                        # V4:V6
        _params(ws, 4 + j, 23, start[j])                            # W4:Y6
    _loss(ws, "V8", "W8", "mean cross-entropy", "=AVERAGE(Classes[ce])")
    ws["V9"], ws["W9"] = "accuracy", "=AVERAGE(Classes[correct])"
    ws.column_dimensions["V"].width = 20
    solver_model(ws, "$W$8", "$W$4:$Y$6")
    readme(wb, "softmax_regression.xlsx: three classes, softmax and cross-entropy", [
        f"{3 * PER_CLASS} points in three Gaussian clusters (centres {CENTRES}, sd 1, seed {SOFTMAX_SEED}), "
        "shuffled. The table Classes holds x1, x2, Ones (for the bias), the class 1-3 and its one-hot y1:y3.",
        "Per row: logits z_k = SUMPRODUCT(x1:Ones, weights of class k), e_k = EXP(z_k), the softmax "
        "p_k = e_k / SUM(e1:e3), the cross-entropy ce = -(y1·LN(p1) + y2·LN(p2) + y3·LN(p3)), and the "
        "predicted class. W8 is the mean cross-entropy, W9 the accuracy.",
        "The Excel Solver model (Data > Solver) minimises W8 by changing the yellow weights W4:Y6 "
        "(one row per class), which start random.",
        RUN_LINES,
        "xl2nn inspect sample_workbooks/softmax_regression.xlsx",
        "xl2nn verify sample_workbooks/softmax_regression.xlsx",
        "xl2nn train sample_workbooks/softmax_regression.xlsx",
        LIBREOFFICE,
    ])
    return finish(wb, active="softmax")


# --------------------------------------------------------------------------- SGD by hand

SGD_SEED, STEPS, LR = 3, 30, 0.1
TRUE_A, TRUE_B = 2.0, 1.0


def sgd_by_hand() -> Workbook:
    rng = np.random.default_rng(SGD_SEED)
    x = np.round(rng.uniform(0.0, 2.0, size=STEPS), 3)
    y = np.round(TRUE_A * x + TRUE_B + rng.normal(scale=0.1, size=STEPS), 3)
    wb = Workbook()
    ws = wb.active
    ws.title = "sgd"
    ws["A1"] = "SGD by hand: fit y = a·x + b one data point (row) at a time"
    ws["A1"].font = BOLD
    ws["A2"], ws["B2"] = "learning rate", LR
    ws["B2"].fill = PARAM_FILL
    headers(ws, 3, 1, ["x", "y", "b", "a", "y_pred", "err²", "err² (b+0.01)", "est de/db", "err² (a+0.01)",
                       "est de/da", "de/db", "de/da", "new b", "new a"])
    for i in range(STEPS):
        r = 4 + i
        ws[f"A{r}"], ws[f"B{r}"] = float(x[i]), float(y[i])
        if i == 0:
            ws["C4"], ws["D4"] = 0.0, 0.0            # where SGD starts
        else:
            ws[f"C{r}"], ws[f"D{r}"] = f"=M{r - 1}", f"=N{r - 1}"     # the previous row's new b and a
        ws[f"E{r}"] = f"=D{r}*A{r}+C{r}"
        ws[f"F{r}"] = f"=(E{r}-B{r})^2"
        ws[f"G{r}"] = f"=(D{r}*A{r}+(C{r}+0.01)-B{r})^2"
        ws[f"H{r}"] = f"=(G{r}-F{r})/0.01"
        ws[f"I{r}"] = f"=((D{r}+0.01)*A{r}+C{r}-B{r})^2"
        ws[f"J{r}"] = f"=(I{r}-F{r})/0.01"
        ws[f"K{r}"] = f"=2*(E{r}-B{r})"
        ws[f"L{r}"] = f"=2*(E{r}-B{r})*A{r}"
        ws[f"M{r}"] = f"=C{r}-$B$2*K{r}"
        ws[f"N{r}"] = f"=D{r}-$B$2*L{r}"
    last = 3 + STEPS
    for col in "KL":
        for r in range(4, last + 1):
            ws[f"{col}{r}"].fill = LOSS_FILL
    # Beside it, what Solver (or xl2nn train) does instead: one a and b for all rows at once.
    headers(ws, 3, 16, ["fit y_pred", "fit err²"])                 # P3:Q3
    for r in range(4, last + 1):
        ws[f"P{r}"] = f"=$S$4*A{r}+$T$4"
        ws[f"Q{r}"] = f"=(P{r}-B{r})^2"
    headers(ws, 3, 19, ["a", "b"])                                 # S3:T3
    _params(ws, 4, 19, [0.0, 0.0])
    _loss(ws, "S6", "T6", "mean fit err²", f"=AVERAGE(Q4:Q{last})")
    ws["S8"], ws["T8"] = f"SGD's a after {STEPS} steps", f"=N{last}"
    ws["S9"], ws["T9"] = f"SGD's b after {STEPS} steps", f"=M{last}"
    ws.column_dimensions["S"].width = 22
    solver_model(ws, "$T$6", "$S$4:$T$4")
    readme(wb, "sgd_by_hand.xlsx: stochastic gradient descent as teachers write it", [
        f"{STEPS} data points of y = {TRUE_A:g}·x + {TRUE_B:g} + noise (seed {SGD_SEED}), one per row. Each row is "
        "one SGD step: the current b and a (row 4: the start, 0 and 0; below: the previous row's new b and "
        "new a), the prediction, the squared error err², finite-difference estimates of its derivatives, "
        f"the hand-written derivatives de/db = 2·(y_pred - y) (column K) and de/da = 2·(y_pred - y)·x (L), "
        f"and the new b and a = old - learning rate ({LR:g}, cell B2) × derivative.",
        "xl2nn verify checks the hand-written derivatives against autograd, row by row; each row's b (or a) "
        "is taken as given even where it is a formula, so the derivative is the one the row means:",
        f"xl2nn verify sample_workbooks/sgd_by_hand.xlsx --grad K4:K{last} --of F4:F{last} --wrt C4:C{last}",
        f"xl2nn verify sample_workbooks/sgd_by_hand.xlsx --grad L4:L{last} --of F4:F{last} --wrt D4:D{last}",
        "Columns P:T fit one a and b to all rows at once: the Excel Solver model (Data > Solver) minimises the "
        "mean fit err² in T6 by changing the yellow S4:T4; T8:T9 show where SGD by hand got to. xl2nn trains "
        "that model by full-batch gradient descent:",
        "xl2nn train sample_workbooks/sgd_by_hand.xlsx",
        LIBREOFFICE,
    ])
    return finish(wb, active="sgd")


# --------------------------------------------------------------------------- convolution

CONV_SEED, SIDE = 4, 12                    # a 12×12 image; a 3×3 kernel gives a 10×10 feature map
SOBEL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])   # vertical edges


def _image(rng: np.random.Generator) -> np.ndarray:
    """A few bright rectangles on a dark background, lightly noised: edges to find."""
    img = np.zeros((SIDE, SIDE))
    for _ in range(3):
        r, c = rng.integers(0, SIDE - 3, size=2)
        h, w = rng.integers(3, 7, size=2)
        img[r:r + h, c:c + w] = 1.0
    return np.round(img + rng.uniform(0.0, 0.1, size=img.shape), 2)


def convolution() -> Workbook:
    from openpyxl.utils import get_column_letter as col
    from openpyxl.worksheet.formula import ArrayFormula
    rng = np.random.default_rng(CONV_SEED)
    img = _image(rng)
    out = SIDE - 2
    windows = np.lib.stride_tricks.sliding_window_view(img, (3, 3))
    target = np.round(np.maximum(0.0, (windows * SOBEL).sum(axis=(2, 3))), 4)
    wb = Workbook()
    ws = wb.active
    ws.title = "conv"
    ws["A1"] = "A 3×3 convolution with ReLU, learned: which kernel turns the image into the target edges?"
    ws["A1"].font = BOLD
    ws["B3"], ws["O3"] = "image (12×12)", "kernel (3×3)"
    for i in range(SIDE):
        for j in range(SIDE):
            ws.cell(4 + i, 2 + j, float(img[i, j])).number_format = "0.00"
    start = rng.uniform(-0.5, 0.5, size=(3, 3))
    for i in range(3):
        _params(ws, 4 + i, 16, start[i])                                # P4:R6
    ws["B18"], ws["N18"], ws["B31"] = ("feature map = MAX(0, SUM(window × kernel))", "target (vertical edges)",
                                       "squared error")
    for i in range(out):
        for j in range(out):
            r, c = 19 + i, 2 + j
            window = f"{col(c)}{4 + i}:{col(c + 2)}{6 + i}"
            here = f"{col(c)}{r}"
            # One array formula per cell, as Excel 365 saves a formula that multiplies ranges.
            ws[here] = ArrayFormula(here, f"=MAX(0,SUM({window}*$P$4:$R$6))")
            ws[here].number_format = "0.000"
            ws.cell(r, 14 + j, float(target[i, j])).number_format = "0.000"   # N19:W28
            ws.cell(32 + i, c, f"=({here}-{col(14 + j)}{r})^2")                  # B32:K41
    _loss(ws, "P8", "P9", "mean squared error", "=AVERAGE(B32:K41)")
    solver_model(ws, "$P$9", "$P$4:$R$6")
    readme(wb, "convolution.xlsx: a convolutional layer, filled over a grid", [
        f"A {SIDE}×{SIDE} image (B4:M15, seed {CONV_SEED}) and a 3×3 kernel (the yellow P4:R6, random start). "
        "Each cell of the 10×10 feature map B19:K28 is =MAX(0,SUM(window*kernel)) over the 3×3 window under it: "
        "a convolution with a ReLU, written the way the 'AI by hand' sheets write it. N19:W28 is the target, "
        "the ReLU of the image's vertical edges (a Sobel kernel); B32:K41 the squared errors, P9 their mean.",
        "The Excel Solver model minimises P9 by changing the kernel. xl2nn compiles the 100 copied formulas "
        "to one tensor op (inspect calls it 'conv 3×3 + ReLU') and trains the kernel:",
        "xl2nn inspect sample_workbooks/convolution.xlsx",
        "xl2nn train sample_workbooks/convolution.xlsx --steps 2000 --lr 0.5",
        LIBREOFFICE,
    ])
    return finish(wb, active="conv")
