"""Finding the model: Excel Solver's hidden names, or --params/--loss from the user."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..cells import Area, cell_name
from ..errors import BadInput
from ..formula import FormulaParser
from ..formula.ast import Ref
from ..reader.workbook import Workbook

SENSES = {"1": "max", "2": "min", "3": "value"}


@dataclass
class ModelSpec:
    sheet: str
    objective: tuple[str, int, int]
    params: list[Area]
    sense: str = "min"            # "min", "max" or "value" (reach solver_val)
    target: float | None = None
    source: str = "Solver"
    note: str = ""                # why this sheet, when several sheets have Solver models
    # A forward-only model (export --inputs/--outputs): leaves given to forward() as arguments
    # (before the parameters), and the range forward() returns instead of the objective cell.
    inputs: list[Area] = field(default_factory=list)
    result: Area | None = None

    @property
    def objective_name(self) -> str:
        return cell_name(*self.objective)

    @property
    def leaves(self) -> list[Area]:
        """Every range the model takes as given: the inputs, then the parameters."""
        return [*self.inputs, *self.params]


def solver_sheets(wb: Workbook) -> list[str]:
    out = []
    for n in wb.names:
        if n.name.lower() == "solver_opt" and n.sheet_index is not None:
            s = wb.sheet_by_index(n.sheet_index)
            if s is not None:
                out.append(s.name)
    return out


def _split_union(text: str) -> list[str]:
    """'a!$A$1:$B$2,a!$C$3' -> parts, commas inside quotes kept."""
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_areas(wb: Workbook, text: str, sheet: str, what: str) -> list[Area]:
    """'a!$A$1:$B$2,C3' as Areas, unqualified parts on `sheet`; `what` names it in errors."""
    parser = FormulaParser(wb)
    out = []
    for part in _split_union(text.lstrip("=")):
        try:
            node = parser.parse(part, sheet, 1, 1)
        except Exception:
            node = None
        if not isinstance(node, Ref):
            raise BadInput(f"{wb.path}: {what} {part!r} is not a cell range")
        area = node.area_at(1, 1)
        if area.sheet not in wb.sheets:
            raise BadInput(f"{wb.path}: {what} {part!r} names a sheet that does not exist")
        out.append(area)
    return out


def find_model(wb: Workbook, sheet: str | None = None, params: str | None = None,
               loss: str | None = None) -> ModelSpec:
    if sheet is not None and sheet not in wb.sheets:
        try:
            sheet = wb.sheet(sheet).name
        except KeyError:
            raise BadInput(f"{wb.path}: no sheet named {sheet!r}; sheets: {', '.join(wb.sheets)}") from None
    candidates = solver_sheets(wb)
    note = ""
    if sheet is None and not (params and loss):
        if not candidates:
            raise BadInput(f"{wb.path}: no Excel Solver model found (sheets: {', '.join(wb.sheets)}); "
                           "give the parameters and objective with --params RANGE[,RANGE] --loss CELL")
        sheet = candidates[0]
        if len(candidates) > 1:
            # As Excel's Solver dialog does: the model of the sheet the workbook opens on.
            if wb.active_sheet not in candidates:
                raise BadInput(f"{wb.path}: Solver models on several sheets ({', '.join(candidates)}) and "
                               "none on the sheet the workbook opens on; pick one with --sheet NAME")
            sheet = wb.active_sheet
            others = ", ".join(c for c in candidates if c != sheet)
            note = (f"the sheet the workbook opens on, {sheet!r}; Solver models also on {others} "
                    "(pick one with --sheet NAME)")
    home = sheet or next(iter(wb.sheets))
    spec = ModelSpec(sheet=home, objective=("", 0, 0), params=[], note=note)
    if home in candidates:
        idx = wb.sheets[home].index
        names = {n.name.lower(): n.text for n in wb.names if n.sheet_index == idx}
        if "solver_opt" in names and not loss:
            loss = names["solver_opt"]
        if "solver_adj" in names and not params:
            params = names["solver_adj"]
        spec.sense = SENSES.get(names.get("solver_typ", "2").strip(), "min")
        if spec.sense == "value":
            try:
                spec.target = float(names.get("solver_val", "0"))
            except ValueError:
                spec.target = 0.0
    else:
        spec.source = "--params/--loss"
    if not params or not loss:
        raise BadInput(f"{wb.path}: sheet {home!r} has no Solver model; "
                       "give --params RANGE[,RANGE] and --loss CELL")
    if params and loss and (sheet is None or home not in candidates):
        spec.source = "--params/--loss"
    objective = parse_areas(wb, loss, home, "objective")
    if len(objective) != 1 or objective[0].size != 1:
        raise BadInput(f"{wb.path}: the objective {loss!r} must be a single cell")
    o = objective[0]
    spec.objective = (o.sheet, o.r1, o.c1)
    spec.params = parse_areas(wb, params, home, "parameter range")
    spec.sheet = o.sheet
    return spec


def parse_cell_name(wb: Workbook, text: str, default_sheet: str) -> tuple[str, int, int]:
    m = re.match(r"^(?:(.+)!)?\$?([A-Za-z]{1,3})\$?(\d+)$", text.strip())
    if not m:
        raise BadInput(f"{wb.path}: {text!r} is not a cell like Sheet!B3")
    area = parse_areas(wb, text, default_sheet, "cell")[0]
    return area.sheet, area.r1, area.c1
