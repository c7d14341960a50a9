"""backprop.xlsx: Matt Mazur's 2-2-2 sigmoid network ("A Step by Step Backpropagation Example"),
trained by hand in Excel, one row per SGD step, the chain rule written out as cell formulas."""
from __future__ import annotations

from openpyxl import Workbook

from common import BOLD, LOSS_FILL, PARAM_FILL, finish, headers, readme

STEPS = 50
FIRST, LAST = 4, 4 + STEPS - 1            # one row per step: rows 4..53
W0 = (0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55)      # Mazur's starting w1..w8
# (label, value, cell) of the constants, in a panel right of the steps
CONSTANTS = [("i1", 0.05), ("i2", 0.10), ("target o1", 0.01), ("target o2", 0.99), ("b1", 0.35), ("b2", 0.60),
             ("learning rate", 0.5)]
PANEL = "AC"                              # values in AC4:AC10, labels in AB

# The columns, left to right, in the order the forward pass computes them.
COLUMNS = ["step", "w1", "w2", "w3", "w4", "net_h1", "out_h1", "net_h2", "out_h2", "w5", "w6", "w7", "w8",
           "net_o1", "out_o1", "net_o2", "out_o2", "E_total"] + [f"∂E/∂w{i}" for i in range(1, 9)]
W_COLS = "BCDEJKLM"                       # w1..w8
GRAD_COLS = "STUVWXYZ"                    # ∂E/∂w1..∂E/∂w8
GRAD = f"S{FIRST}:Z{LAST}"
OF = f"R{FIRST}:R{LAST}"
WRT = f"B{FIRST}:E{LAST},J{FIRST}:M{LAST}"


def _const(name: str) -> str:
    """The absolute reference of a constant, e.g. '$AC$4' for i1."""
    row = 4 + [n for n, _ in CONSTANTS].index(name)
    return f"${PANEL}${row}"


def _row(r: int) -> dict[str, str]:
    """Row r's formulas by column: the forward pass, E_total and the hand-written derivatives."""
    i1, i2, t1, t2, b1, b2 = (_const(n) for n in ("i1", "i2", "target o1", "target o2", "b1", "b2"))
    sig = "1/(1+EXP(-{}))"
    # dE/dnet_o = (out_o - target)·out_o·(1 - out_o): the output units' deltas, written out each time
    d_o1 = f"(O{r}-{t1})*O{r}*(1-O{r})"
    d_o2 = f"(Q{r}-{t2})*Q{r}*(1-Q{r})"
    back_h1 = f"({d_o1}*J{r}+{d_o2}*L{r})*G{r}*(1-G{r})"     # through w5 and w7 to h1
    back_h2 = f"({d_o1}*K{r}+{d_o2}*M{r})*I{r}*(1-I{r})"     # through w6 and w8 to h2
    return {
        "F": f"=B{r}*{i1}+C{r}*{i2}+{b1}", "G": "=" + sig.format(f"F{r}"),
        "H": f"=D{r}*{i1}+E{r}*{i2}+{b1}", "I": "=" + sig.format(f"H{r}"),
        "N": f"=J{r}*G{r}+K{r}*I{r}+{b2}", "O": "=" + sig.format(f"N{r}"),
        "P": f"=L{r}*G{r}+M{r}*I{r}+{b2}", "Q": "=" + sig.format(f"P{r}"),
        "R": f"=0.5*({t1}-O{r})^2+0.5*({t2}-Q{r})^2",
        "S": f"={back_h1}*{i1}", "T": f"={back_h1}*{i2}",
        "U": f"={back_h2}*{i1}", "V": f"={back_h2}*{i2}",
        "W": f"={d_o1}*G{r}", "X": f"={d_o1}*I{r}",
        "Y": f"={d_o2}*G{r}", "Z": f"={d_o2}*I{r}",
    }


def build() -> Workbook:
    wb = Workbook()
    ws = wb.active
    ws.title = "backprop"
    ws["A1"] = "Backpropagation by hand: Matt Mazur's 2-2-2 sigmoid network, one SGD step per row"
    ws["A1"].font = BOLD
    ws["A2"] = "each row: forward pass, E_total, ∂E/∂w by the chain rule; the next row's w = w − learning rate × ∂E/∂w"
    headers(ws, 3, 1, COLUMNS)
    for r in range(FIRST, LAST + 1):
        ws[f"A{r}"] = r - FIRST
        for j, col in enumerate(W_COLS):
            if r == FIRST:
                ws[f"{col}{r}"] = W0[j]                      # where SGD starts
                ws[f"{col}{r}"].fill = PARAM_FILL
            else:                                            # the previous row's new weight
                ws[f"{col}{r}"] = f"={col}{r - 1}-{_const('learning rate')}*{GRAD_COLS[j]}{r - 1}"
        for col, formula in _row(r).items():
            ws[f"{col}{r}"] = formula
        ws[f"R{r}"].fill = LOSS_FILL
    headers(ws, 3, 28, ["constant", "value"])                # AB3:AC3
    for k, (name, value) in enumerate(CONSTANTS):
        ws.cell(4 + k, 28, name)
        ws.cell(4 + k, 29, value)
    ws["AB12"], ws["AC12"] = f"E_total after {STEPS} steps", f"=R{LAST}"
    ws["AB12"].font = ws["AC12"].font = BOLD
    ws.column_dimensions["AB"].width = 22
    readme(wb, "backprop.xlsx: backpropagation by hand, one SGD step per row", [
        "Matt Mazur's worked example (\"A Step by Step Backpropagation Example\"): inputs i1 = 0.05, i2 = 0.10, "
        "targets 0.01 and 0.99, two sigmoid hidden units h1, h2 and two sigmoid outputs o1, o2 (1/(1+EXP(-x))), "
        "starting weights w1..w8 = 0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55, biases b1 = 0.35 and "
        "b2 = 0.60 held fixed, E_total = ½(target o1 − out_o1)² + ½(target o2 − out_o2)², learning rate 0.5. "
        "The constants are in AB3:AC10.",
        f"Sheet backprop, one row per SGD step ({STEPS} steps, rows {FIRST}-{LAST}): the weights w1..w4 (B:E), "
        "the hidden units' net and out (F:I), w5..w8 (J:M), the outputs' net and out (N:Q), E_total (R), and "
        "the hand-written derivatives ∂E/∂w1..∂E/∂w8 (S:Z), the chain rule written out as cell formulas: "
        "∂E/∂w5 = (out_o1 − target o1)·out_o1·(1 − out_o1)·out_h1, and ∂E/∂w1 = [δo1·w5 + δo2·w7]·out_h1·"
        "(1 − out_h1)·i1 with δo = (out_o − target)·out_o·(1 − out_o). Row 4 holds the starting weights; each "
        "later row's weights are the row above's minus learning rate × ∂E/∂w. Row 4 is Mazur's first step "
        "(E_total 0.298371109, ∂E/∂w5 0.082167041).",
        "xl2nn verify checks the hand-written derivatives against autograd, every step and every weight: "
        "cell (k, j) of S4:Z53 against ∂ E_total of row k / ∂ weight j of row k, each row's weights taken as "
        "given even though they are formulas (the previous row's new w), so the derivative is the one the row "
        "means. The weights are two ranges taken side by side (w1..w4, then w5..w8):",
        f"xl2nn verify sample_workbooks/backprop.xlsx --grad {GRAD} --of {OF} --wrt {WRT}",
        "There is no Solver model: the sheet is the training run.",
        "The cached values in this file were computed by LibreOffice (the build recalculates it headless), so "
        "xl2nn verify compares xl2nn's engine with one it did not write. Built by sample_workbooks/build.py; "
        "do not edit by hand, rebuild.",
    ])
    return finish(wb, active="backprop")
