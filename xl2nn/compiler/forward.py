"""Forward-only models: chosen cells as the model's inputs, a range as its result.

Most ML sheets have no Solver model: they are forward passes (an MLP, a softmax, attention).
`forward_spec` reads `--inputs RANGE[,RANGE] --outputs RANGE [--params RANGE[,RANGE]]`;
`compile_forward` compiles the function from the input cells to the output cells, with
everything else folded to constants. The inputs are leaves of the compiled model like the
parameters; export passes them to forward() as arguments instead of holding them as state.

Input cells may hold formulas: they are cut loose (leaves.cut_loose), taken as given, as
`verify --grad` does with its --wrt cells.
"""
from __future__ import annotations


import torch

from ..cells import Area, CellError, cell_name
from ..errors import BadInput
from ..ir.graph import Graph, build_graph
from ..reader.workbook import Workbook
from .grid import Grids, error_source, recalculate
from .leaves import cut_loose, feeding, shown
from .lower import CompiledModel, compile_model
from .model import ModelSpec, parse_areas


def home_sheet(wb: Workbook, sheet: str | None) -> str:
    """The sheet unqualified ranges are on: `sheet` (any case), else the one the workbook opens on."""
    if sheet is None:
        return wb.active_sheet or next(iter(wb.sheets))
    try:
        return wb.sheet(sheet).name
    except KeyError:
        raise BadInput(f"{wb.path}: no sheet named {sheet!r}; sheets: {', '.join(wb.sheets)}") from None


def forward_spec(wb: Workbook, sheet: str | None, inputs: str, outputs: str, params: str | None = None) -> ModelSpec:
    """The forward-only model `--inputs ... --outputs ... [--params ...]` names; ranges that
    overlap, or an --outputs that is not one range, are one-line errors."""
    home = home_sheet(wb, sheet)
    ins = parse_areas(wb, inputs, home, "--inputs")
    outs = parse_areas(wb, outputs, home, "--outputs")
    if len(outs) != 1:
        raise BadInput(f"{wb.path}: --outputs {outputs!r} must be one range, e.g. H2:I11; forward() returns it "
                       "as one tensor, rows × columns")
    ps = parse_areas(wb, params, home, "--params") if params else []
    _no_overlap(wb, [("--inputs", a) for a in ins] + [("--params", a) for a in ps] + [("--outputs", outs[0])])
    out = outs[0]
    return ModelSpec(sheet=out.sheet, objective=(out.sheet, out.r1, out.c1), params=ps,
                     source="--inputs/--outputs", inputs=ins, result=out)


def _no_overlap(wb: Workbook, named: list[tuple[str, Area]]) -> None:
    """Each cell is one thing: an input, a parameter or an output, once."""
    for i, (flag_a, a) in enumerate(named):
        for flag_b, b in named[i + 1:]:
            r, c = max(a.r1, b.r1), max(a.c1, b.c1)
            if a.sheet == b.sheet and r <= min(a.r2, b.r2) and c <= min(a.c2, b.c2):
                raise BadInput(f"{wb.path}: {flag_a} {a} and {flag_b} {b} overlap at {cell_name(a.sheet, r, c)}; "
                               "each cell is an input, a parameter or an output, once")


def compile_forward(wb: Workbook, graph: Graph, spec: ModelSpec, device: torch.device | None = None
                    ) -> CompiledModel:
    """The model of a forward spec: forward() returns spec.result (rows × columns) from the
    input leaves (the workbook's values, or its recalculated values where an input is a
    formula) and the parameters."""
    grids = recalculate(wb, graph, only=feeding(graph, spec.inputs)).grids
    cut = cut_loose(wb, grids, spec.inputs, "--inputs", "give input cells outside it")
    cut_graph = build_graph(cut)
    _check_outputs_reached(cut, cut_graph, spec)
    model = compile_model(cut, cut_graph, spec, device, must_reach=False)
    _check_output_values(cut, cut_graph, model.grids, spec.result)
    return model


def _check_outputs_reached(wb: Workbook, graph: Graph, spec: ModelSpec) -> None:
    """Every output cell is a formula that depends on an input cell."""
    area = spec.result
    assert area is not None
    fams = []
    for r, c in area.cells():
        fam = graph.family_at(area.sheet, r, c)
        if fam is None:
            raise BadInput(f"{wb.path}: the output {cell_name(area.sheet, r, c)} is not a formula; --outputs must "
                           "be cells computed from the --inputs cells")
        fams.append((r, c, fam))
    needed = graph.ancestors(sorted({f.id for _, _, f in fams}))
    reached = graph.dependents(graph.reading(spec.inputs, among=needed), within=needed)
    for r, c, fam in fams:
        if fam.id not in reached:
            inputs = ", ".join(str(a) for a in spec.inputs)
            raise BadInput(f"{wb.path}: the output {cell_name(area.sheet, r, c)} ({fam.formula_at(r, c)}) does not "
                           f"depend on any --inputs cell ({inputs}); every output must be computed from the inputs")


def _check_output_values(wb: Workbook, graph: Graph, grids: Grids, area: Area | None) -> None:
    """At the workbook's inputs every output is a number: an error or text there is named with
    where it starts (the traced function would carry it as a NaN, or not at all)."""
    assert area is not None
    for r, c in area.cells():
        v = grids.value(area.sheet, r, c)
        if isinstance(v, CellError):
            raise BadInput(f"{wb.path}: the output {cell_name(area.sheet, r, c)} is {v} at the workbook's inputs; "
                           f"it comes from {error_source(graph, grids, area.sheet, r, c)}")
        if not isinstance(v, float) or isinstance(v, bool):
            raise BadInput(f"{wb.path}: the output {cell_name(area.sheet, r, c)} is {shown(v)} at the workbook's "
                           "inputs, not a number")


def example_inputs(model: CompiledModel) -> tuple[torch.Tensor, ...]:
    """The workbook's values of the input ranges, in forward()'s argument order."""
    return tuple(model.weights[n].detach().clone() for n in model.input_names)


__all__ = ["compile_forward", "cut_loose", "example_inputs", "forward_spec", "home_sheet"]
