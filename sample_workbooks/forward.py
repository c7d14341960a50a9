"""forward_pass.xlsx: networks computed forward only, no Solver model, as people lay them out:
an MLP with a softmax, one self-attention head, a convolution with ReLU and max-pooling."""
from __future__ import annotations

import numpy as np
from openpyxl import Workbook
from openpyxl.utils import get_column_letter as col
from openpyxl.worksheet.formula import ArrayFormula
from openpyxl.worksheet.worksheet import Worksheet

from common import BOLD, finish, headers, readme
from synthetic import LIBREOFFICE

SEED = 5
ROWS = 20          # mlp: 20 rows of 4 features
TOKENS, D = 5, 4   # attention: 5 tokens of dimension 4
SIDE, K = 8, 3     # cnn: an 8×8 image, a 3×3 kernel, a 6×6 feature map, 2×2 max-pool to 3×3


def _block(ws: Worksheet, top: int, left: int, values: np.ndarray, fmt: str = "0.000") -> None:
    for i, line in enumerate(np.atleast_2d(values)):
        for j, v in enumerate(line):
            ws.cell(top + i, left + j, float(v)).number_format = fmt


def _matrix(ws: Worksheet, top: int, left: int, values: np.ndarray, rows: list[str], cols: list[str]) -> None:
    """A weight matrix with its row labels to the left and column labels above: values at (top, left)."""
    headers(ws, top - 1, left, cols)
    for i, name in enumerate(rows):
        ws.cell(top + i, left - 1, name).font = BOLD
    _block(ws, top, left, values)


def _array(ws: Worksheet, ref: str, formula: str) -> None:
    """One Ctrl+Shift+Enter formula over `ref`."""
    ws[ref.split(":")[0]] = ArrayFormula(ref, formula)


def _title(ws: Worksheet, text: str) -> None:
    ws["A1"] = text
    ws["A1"].font = BOLD


# --------------------------------------------------------------------------- mlp

def mlp(wb: Workbook, rng: np.random.Generator) -> None:
    """4 features → 3 ReLU units (MMULT) → 2 sigmoid units (SUMPRODUCT per unit) → 3 classes
    (MMULT, EXP, each row's softmax)."""
    ws = wb.create_sheet("mlp")
    _title(ws, "A small MLP, forward: MMULT + ReLU, SUMPRODUCT + sigmoid, MMULT + softmax over 3 classes")
    last = 3 + ROWS
    headers(ws, 3, 1, ["x1", "x2", "x3", "x4"])                                   # A3:D3
    _block(ws, 4, 1, np.round(rng.normal(size=(ROWS, 4)), 3))                       # A4:D23
    xs, hs, gs = ["x1", "x2", "x3", "x4"], ["h1", "h2", "h3"], ["g1", "g2"]
    classes = ["class 1", "class 2", "class 3"]
    _matrix(ws, 4, 7, np.round(rng.normal(scale=0.6, size=(4, 3)), 3), xs, hs)      # W1 G4:I7
    _matrix(ws, 8, 7, np.round(rng.normal(scale=0.1, size=(1, 3)), 3), ["b1"], [])  # b1 G8:I8
    _matrix(ws, 11, 7, np.round(rng.normal(scale=0.6, size=(2, 3)), 3), gs, hs)     # W2 G11:I12, a row per unit
    headers(ws, 10, 10, ["b2"])
    _block(ws, 11, 10, np.round(rng.normal(scale=0.1, size=(2, 1)), 3))             # b2 J11:J12
    _matrix(ws, 15, 7, np.round(rng.normal(scale=0.8, size=(2, 3)), 3), gs, classes)  # W3 G15:I16
    _matrix(ws, 17, 7, np.round(rng.normal(scale=0.1, size=(1, 3)), 3), ["b3"], [])   # b3 G17:I17
    ws["F2"], ws["F9"], ws["F14"] = "layer 1", "layer 2", "output layer"

    headers(ws, 3, 11, ["h1 in", "h2 in", "h3 in", "h1", "h2", "h3", "g1 in", "g2 in", "g1", "g2",
                        "z1", "z2", "z3", "e1", "e2", "e3", "p1", "p2", "p3", "predicted"])   # K3:AD3
    _array(ws, f"K4:M{last}", f"=MMULT(A4:D{last},G4:I7)")
    _array(ws, f"U4:W{last}", f"=MMULT(S4:T{last},G15:I16)")
    for r in range(4, last + 1):
        for j in range(3):
            c = 14 + j                                                               # N:P
            ws.cell(r, c, f"=MAX(0,{col(c - 3)}{r}+{col(7 + j)}$8)")
            ws.cell(r, 24 + j, f"=EXP({col(21 + j)}{r}+{col(7 + j)}$17)")          # X:Z
            ws.cell(r, 27 + j, f"={col(24 + j)}{r}/SUM($X{r}:$Z{r})")               # AA:AC
        ws[f"Q{r}"] = f"=SUMPRODUCT($N{r}:$P{r},$G$11:$I$11)+$J$11"
        ws[f"R{r}"] = f"=SUMPRODUCT($N{r}:$P{r},$G$12:$I$12)+$J$12"
        for c in (19, 20):                                                           # S:T
            ws.cell(r, c, f"=1/(1+EXP(-{col(c - 2)}{r}))")
        ws[f"AD{r}"] = f"=MATCH(MAX($AA{r}:$AC{r}),$AA{r}:$AC{r},0)"


# --------------------------------------------------------------------------- attention

def attention(wb: Workbook, rng: np.random.Generator) -> None:
    """One self-attention head: Q, K, V = X·W (MMULT), scores QKᵀ/√d, each row's softmax, A·V."""
    ws = wb.create_sheet("attention")
    _title(ws, "Self-attention, one head: softmax(Q·Kᵀ/√d)·V with Q = X·Wq, K = X·Wk, V = X·Wv")
    toks, ds = [f"tok{i + 1}" for i in range(TOKENS)], [f"d{i + 1}" for i in range(D)]
    _matrix(ws, 3, 2, np.round(rng.normal(size=(TOKENS, D)), 3), toks, ds)           # X B3:E7
    ws["A2"] = "X"
    for top, name in ((3, "q"), (10, "k"), (17, "v")):                               # Wq H3:K6, Wk H10:K13, Wv H17:K20
        _matrix(ws, top, 8, np.round(rng.normal(scale=0.5, size=(D, D)), 3), ds, [f"{name}{j + 1}" for j in range(D)])
        ws.cell(top - 1, 7, f"W{name}").font = BOLD
    for top, name, w in ((3, "Q", "H3:K6"), (10, "K", "H10:K13"), (17, "V", "H17:K20")):   # N3:Q7, N10:Q14, N17:Q21
        headers(ws, top - 1, 14, [f"{name.lower()}{j + 1}" for j in range(D)])
        ws.cell(top - 1, 13, name).font = BOLD
        _array(ws, f"N{top}:Q{top + TOKENS - 1}", f"=MMULT($B$3:$E$7,{w})")
    ws["S1"] = "scores = Q·Kᵀ/√d"
    headers(ws, 2, 19, toks)
    _array(ws, "S3:W7", f"=MMULT(N3:Q7,TRANSPOSE(N10:Q14))/SQRT({D})")             # S3:W7
    ws["S8"] = "attention weights: each row's softmax"
    headers(ws, 9, 19, toks)
    for i in range(TOKENS):
        for j in range(TOKENS):
            here, score = f"{col(19 + j)}{10 + i}", f"{col(19 + j)}{3 + i}"
            ws[here] = f"=EXP({score})/SUMPRODUCT(EXP($S{3 + i}:$W{3 + i}))"      # S10:W14
    ws["S15"] = "output = weights·V"
    headers(ws, 16, 19, [f"o{j + 1}" for j in range(D)])
    _array(ws, "S17:V21", "=MMULT(S10:W14,N17:Q21)")                               # S17:V21


# --------------------------------------------------------------------------- cnn

def cnn(wb: Workbook, rng: np.random.Generator) -> None:
    """A 3×3 convolution over an 8×8 image (SUMPRODUCT copied over 6×6), ReLU, 2×2 max-pool."""
    ws = wb.create_sheet("cnn")
    _title(ws, "A convolutional layer: 3×3 kernel over an 8×8 image, ReLU, 2×2 max-pooling")
    ws["B2"], ws["K2"] = "image (8×8)", "kernel (3×3)"
    _block(ws, 3, 2, np.round(rng.uniform(0.0, 1.0, size=(SIDE, SIDE)), 2), "0.00")   # B3:I10
    _block(ws, 3, 11, np.round(rng.normal(scale=0.5, size=(K, K)), 3))                 # K3:M5
    out = SIDE - K + 1
    ws["B12"], ws["I12"], ws["P12"] = "feature map", "ReLU", "max-pool 2×2"
    for i in range(out):
        for j in range(out):
            r, c = 13 + i, 2 + j
            ws.cell(r, c, f"=SUMPRODUCT({col(c)}{3 + i}:{col(c + K - 1)}{5 + i},$K$3:$M$5)")   # B13:G18
            ws.cell(r, 9 + j, f"=MAX(0,{col(c)}{r})")                                        # I13:N18
    for i in range(out // 2):
        for j in range(out // 2):
            r, c = 13 + 2 * i, 9 + 2 * j
            ws.cell(13 + i, 16 + j, f"=MAX({col(c)}{r}:{col(c + 1)}{r + 1})")                # P13:R15


def build() -> Workbook:
    rng = np.random.default_rng(SEED)
    wb = Workbook()
    wb.remove(wb.active)
    mlp(wb, rng)
    attention(wb, rng)
    cnn(wb, rng)
    readme(wb, "forward_pass.xlsx: networks computed forward, no Solver model", [
        f"Three sheets of formulas, random inputs and weights (seed {SEED}), no model to train: the kind of "
        "sheet that shows how a network computes. xl2nn inspect names each sheet's formulas as the layers "
        "they are.",
        "mlp: 20 rows of 4 features (A4:D23). Layer 1 is one MMULT array formula (K4:M23) with weights W1 "
        "(G4:I7) and a ReLU with the bias b1 (N4:P23); layer 2 is a SUMPRODUCT per unit with the rows of W2 "
        "(G11:I12) plus b2, then a sigmoid (S4:T23); the output layer is an MMULT (U4:W23), EXP with the bias "
        "b3, and each row's softmax over 3 classes (AA4:AC23).",
        "attention: X (5 tokens × 4, B3:E7); Q, K and V are MMULT array formulas with Wq, Wk and Wv; the "
        "scores =MMULT(Q,TRANSPOSE(K))/SQRT(4) (S3:W7); each row's softmax (S10:W14); the output, the "
        "weights times V (S17:V21).",
        "cnn: an 8×8 image (B3:I10), a 3×3 kernel (K3:M5), the 6×6 feature map =SUMPRODUCT(window,kernel) "
        "copied over B13:G18, its ReLU (I13:N18) and a 2×2 max-pool by MAX (P13:R15).",
        "Try it (from the project folder):",
        "xl2nn inspect sample_workbooks/forward_pass.xlsx",
        "xl2nn verify sample_workbooks/forward_pass.xlsx",
        LIBREOFFICE,
    ])
    return finish(wb, active="mlp")
