"""Where computed references land, as dependencies of the graph.

build_graph (ir/graph.py) links a family to what its plain references read; an OFFSET or
INDIRECT reads cells known only once its position arguments are computed. This computes
them: the families that read such references are recalculated (with their ancestors, and
on demand whatever they land on, grid.py), and the blocks each landed on become its
`targets` and the families owning them its dependencies; the graph is then ordered again
(a reference landing on cells computed from itself is a circular reference, as in Excel).

Positions are those of the workbook's values. Where they move later (new inputs, trained
weights), the recalculation still computes what a reference lands on before reading it, and
a model whose positions depend on its parameters widens them to the whole sheet (lower.py).
"""
from __future__ import annotations

from ..cells import MAX_COL, MAX_ROW, Area
from ..formula.ast import Call, Node, refs, walk
from ..ir.families import Family
from ..ir.graph import Graph, ref_bounds, reorder
from ..ir.references import has_targets, read_refs, targets
from ..ranges import merge_areas
from ..reader.workbook import Workbook
from .grid import recalculate


def resolve_references(wb: Workbook, graph: Graph) -> None:
    """Give the graph's computed references their targets (once; a no-op without any)."""
    if graph.resolved:
        return
    graph.resolved = True
    readers = [f.id for f in graph.families if has_targets(f.ast)]
    if not readers:
        return
    landed = recalculate(wb, graph, only=graph.ancestors(readers)).landed
    for fid, blocks in landed.items():
        fam = graph.families[fid]
        fam.targets = merge_areas(blocks)
        for b in blocks:
            fam.deps.update(int(x) for x in graph.owners.owners_in(b.sheet, b.r1, b.c1, b.r2, b.c2))
    reorder(wb, graph)




def widen_moving(wb: Workbook, graph: Graph, leaves: list[Area], needed: set[int], dynamic: set[int]) -> bool:
    """A model's families whose computed references are positioned by the parameters (an
    OFFSET whose row offset is computed from a weight) may land anywhere on their sheet (any
    sheet, for INDIRECT): they depend on every family there that does not depend on them, so
    the model computes those first. Landing on one that does (a circular reference at those
    weights) is an error when it happens (lower.py). Returns whether the graph changed."""
    changed = False
    for fid in sorted(needed):
        fam = graph.families[fid]
        calls = targets(fam.ast)
        if not calls or not _positioned_by(graph, fam, calls, leaves, dynamic):
            continue
        sheets = set(wb.sheets) if any(_mentions(c, "INDIRECT") for c in calls) else \
            {r.sheet for c in calls for r in refs(c) if r.sheet in wb.sheets}
        whole = [Area(s, 1, 1, MAX_ROW, MAX_COL) for s in sorted(sheets)]
        on = {int(x) for a in whole for x in graph.owners.owners_in(a.sheet, a.r1, a.c1, a.r2, a.c2)}
        extra = on - graph.dependents({fid})
        if not extra <= fam.deps or any(a not in fam.targets for a in whole):
            fam.deps |= extra
            fam.targets = fam.targets + [a for a in whole if a not in fam.targets]
            changed = True
    if changed:
        reorder(wb, graph)
    return changed


def _positioned_by(graph: Graph, fam: Family, calls: list[Call], leaves: list[Area], dynamic: set[int]) -> bool:
    """Whether what positions `calls` (their arguments read as values, nested computed
    references included) reads a leaf or a parameter-dependent family."""
    blocks = [Area(r.sheet, *ref_bounds(r, fam)) for c in calls for r in read_refs(c)]
    if any(t is not c for c in calls for t in targets(c)):
        blocks += fam.targets           # a computed reference inside a position: all it may read
    for b in blocks:
        if any(a.sheet == b.sheet and b.r1 <= a.r2 and a.r1 <= b.r2 and b.c1 <= a.c2 and a.c1 <= b.c2
               for a in leaves):
            return True
        if any(int(x) in dynamic for x in graph.owners.owners_in(b.sheet, b.r1, b.c1, b.r2, b.c2)):
            return True
    return False


def _mentions(node: Node, name: str) -> bool:
    return any(isinstance(n, Call) and n.name == name for n in walk(node))


__all__ = ["resolve_references", "widen_moving"]
