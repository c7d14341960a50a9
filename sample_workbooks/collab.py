"""fast.ai's collaborative-filtering sheets: a 15×15 block of ratings, a user embedding per row
and a movie embedding per column, each predicted rating one MMULT of a row and a column.

Two sheets, as in the lesson: `dotprod` (embeddings alone) and `bias` (plus a bias per user and
per movie). The ratings are synthetic (a rank-3 taste model, rounded to half stars, a fifth left
blank: movies a user has not rated)."""
from __future__ import annotations

import numpy as np
from openpyxl import Workbook
from openpyxl.utils import get_column_letter as col

from common import BOLD, LOSS_FILL, PARAM_FILL, finish, readme, solver_model

SEED, USERS, MOVIES, FACTORS = 7, 15, 15, 5
LIBREOFFICE = ("The cached values in this file were computed by LibreOffice (the build recalculates it "
               "headless). Built by sample_workbooks/build.py; do not edit by hand, rebuild.")


def ratings(rng: np.random.Generator) -> np.ndarray:
    """USERS × MOVIES ratings in half stars from 0.5 to 5; NaN where a user rated nothing."""
    taste = rng.normal(size=(USERS, 3)) @ rng.normal(size=(3, MOVIES)) / 1.7
    r = np.clip(np.round((3.2 + taste + rng.normal(scale=0.4, size=taste.shape)) * 2) / 2, 0.5, 5.0)
    r[rng.random(r.shape) < 0.2] = np.nan
    return r


def _block(ws, top: int, left: int, values: np.ndarray, fill=None) -> None:
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not np.isnan(v):
                cell = ws.cell(top + i, left + j, float(v))
                if fill is not None:
                    cell.fill = fill
                    cell.number_format = "0.0000"


def _sheet(wb: Workbook, title: str, r: np.ndarray, rng: np.random.Generator, bias: bool) -> None:
    """Ratings at H2:V16 (users down G, movies across row 1); movie embeddings from row 19
    (a bias row first on `bias`), user embeddings from row 25 (26 with bias) in B:F (a bias
    column A first), predictions beside the user embeddings, in H:V."""
    ws = wb.create_sheet(title)
    left = 8                                                   # column H
    last = col(left + MOVIES - 1)                              # V
    ws["A1"] = "ratings"
    ws["A1"].font = BOLD
    for j in range(MOVIES):
        ws.cell(1, left + j, 101 + j).font = BOLD              # movie ids
    for i in range(USERS):
        ws.cell(2 + i, left - 1, 1 + i).font = BOLD            # user ids in G
    _block(ws, 2, left, r)
    m_top = 19 + bias                                          # movie factors: rows 19:23 or 20:24
    u_top = 25 + bias                                          # user factors: rows 25:39 or 26:40
    ws.cell(18, left - 1, "movie embeddings").font = BOLD
    _block(ws, m_top, left, rng.uniform(0, 1, size=(FACTORS, MOVIES)), PARAM_FILL)
    ws.cell(u_top - 1, 2, "user embeddings").font = BOLD
    _block(ws, u_top, 2, rng.uniform(0, 1, size=(USERS, FACTORS)), PARAM_FILL)
    if bias:
        ws.cell(19, left - 1, "bias").font = BOLD
        _block(ws, 19, left, rng.uniform(0, 1, size=(1, MOVIES)), PARAM_FILL)
        ws.cell(u_top - 1, 1, "bias").font = BOLD
        _block(ws, u_top, 1, rng.uniform(0, 1, size=(USERS, 1)), PARAM_FILL)
    ws.cell(u_top - 1, left, "predictions").font = BOLD
    m_last = m_top + FACTORS - 1
    for i in range(USERS):
        row = u_top + i
        for j in range(MOVIES):
            c = col(left + j)
            dot = f"MMULT($B{row}:${col(1 + FACTORS)}{row},{c}${m_top}:{c}${m_last})"
            extra = f"+{c}$19+$A{row}" if bias else ""
            ws.cell(row, left + j, f'=IF({c}{2 + i}="",0,{dot}{extra})')
    loss = col(left + MOVIES + 2)                              # Y
    ws[f"{loss}1"] = "RMSE"
    ws[f"{loss}2"] = (f"=SQRT(SUMXMY2(H2:{last}{1 + USERS},H{u_top}:{last}{u_top + USERS - 1})"
                      f"/COUNT(H2:{last}{1 + USERS}))")
    ws[f"{loss}1"].font = ws[f"{loss}2"].font = BOLD
    ws[f"{loss}2"].fill = LOSS_FILL
    first = "$A" if bias else "$B"
    solver_model(ws, f"${loss}$2", f"{first}${u_top}:${col(1 + FACTORS)}${u_top + USERS - 1},"
                 f"$H${19}:${last}${m_last}")


def build() -> Workbook:
    rng = np.random.default_rng(SEED)
    r = ratings(rng)
    wb = Workbook()
    wb.remove(wb.active)
    _sheet(wb, "dotprod", r, rng, bias=False)
    _sheet(wb, "bias", r, rng, bias=True)
    readme(wb, "collab_filter.xlsx: collaborative filtering, fast.ai's way", [
        f"{USERS} users × {MOVIES} movies of ratings (H2:V16; a blank is a movie the user did not rate), "
        f"synthetic with seed {SEED}. Each user and each movie has {FACTORS} factors (an embedding); a "
        "prediction is the MMULT of the user's row and the movie's column, 0 where there is no rating: "
        '=IF(H2="",0,MMULT($B25:$F25,H$19:H$23)).',
        "The loss is the root mean squared error over the ratings given: "
        "=SQRT(SUMXMY2(H2:V16,H25:V39)/COUNT(H2:V16)). The sheet bias adds a bias per movie (row 19) and "
        "per user (column A). Each sheet's Excel Solver model minimises Y2 by changing the yellow cells.",
        "Try it (from the project folder):",
        "xl2nn inspect sample_workbooks/collab_filter.xlsx --sheet bias",
        "xl2nn train sample_workbooks/collab_filter.xlsx --sheet dotprod --lr 0.1",
        "xl2nn export sample_workbooks/collab_filter.xlsx --sheet bias -o collab.py",
        LIBREOFFICE,
    ])
    return finish(wb, active="dotprod")
