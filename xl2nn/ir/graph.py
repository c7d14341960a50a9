"""The dependency graph between families, and the order to evaluate them in."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arrays import grown, unique
from ..cells import MAX_COL, MAX_ROW, Area
from ..formula.ast import Ref
from ..reader.workbook import Workbook
from .families import Family, ParseProblem, build_families, rectangles, split
from .references import read_refs


class OwnerMap:
    """Per sheet, which producer owns each cell (-1: none) and at which flat index."""

    def __init__(self, wb: Workbook) -> None:
        self.shape = {s.name: (s.max_row + 1, s.max_col + 1) for s in wb.sheets.values()}
        self.owner = {name: np.full(shape, -1, dtype=np.int32) for name, shape in self.shape.items()}
        self.local = {name: np.zeros(shape, dtype=np.int64) for name, shape in self.shape.items()}

    def claim(self, sheet: str, rows: np.ndarray, cols: np.ndarray, producer: int) -> None:
        self._grow(sheet, int(rows.max()), int(cols.max()))
        self.owner[sheet][rows, cols] = producer
        self.local[sheet][rows, cols] = np.arange(len(rows))

    def _grow(self, sheet: str, row: int, col: int) -> None:
        self.owner[sheet], self.local[sheet] = grow_owners(self.owner[sheet], self.local[sheet], row, col)
        self.shape[sheet] = self.owner[sheet].shape

    def owners_in(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> np.ndarray:
        grid = self.owner.get(sheet)
        if grid is None:
            return np.empty(0, dtype=np.int32)
        h, w = grid.shape
        r1, c1 = max(r1, 0), max(c1, 0)
        block = grid[r1:min(r2, h - 1) + 1, c1:min(c2, w - 1) + 1]
        u = unique(block)
        return u[u >= 0]


def grow_owners(owner: np.ndarray, local: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """A sheet's owner and local-index arrays, enlarged (no owner, index 0) to hold (row, col)."""
    return grown(owner, row + 1, col + 1, -1), grown(local, row + 1, col + 1, 0)


def ref_bounds(ref: Ref, fam: Family) -> tuple[int, int, int, int]:
    """The bounding block of what `ref` reads over all the family's cells."""
    rows, cols = fam.rows, fam.cols
    r_lo = ref.r1 if ref.r1_abs else int(rows.min()) + ref.r1
    r_hi = ref.r2 if ref.r2_abs else int(rows.max()) + ref.r2
    c_lo = ref.c1 if ref.c1_abs else int(cols.min()) + ref.c1
    c_hi = ref.c2 if ref.c2_abs else int(cols.max()) + ref.c2
    return min(r_lo, r_hi), min(c_lo, c_hi), min(max(r_lo, r_hi), MAX_ROW), min(max(c_lo, c_hi), MAX_COL)


def reads_any(fam: Family, areas: list[Area]) -> bool:
    """Does any reference's block (over the whole family) overlap one of `areas`? Computed
    references (OFFSET, INDIRECT) count where they land (Family.targets)."""
    blocks = [Area(ref.sheet, *ref_bounds(ref, fam)) for ref in set(read_refs(fam.ast))] + fam.targets
    for b in blocks:
        for a in areas:
            if a.sheet == b.sheet and b.r1 <= a.r2 and a.r1 <= b.r2 and b.c1 <= a.c2 and a.c1 <= b.c2:
                return True
    return False


@dataclass
class Graph:
    families: list[Family]
    owners: OwnerMap
    order: list[int]            # evaluation order; each cycle's families are listed together
    problems: list[ParseProblem]
    # Circular references that remain after recurrences are split: each a strongly connected
    # component of families (single cells or array formulas), in reading order.
    cycles: list[list[int]] = field(default_factory=list)
    # Whether computed references (OFFSET, INDIRECT) have their targets among the families'
    # dependencies yet (compiler/resolve.py adds them, and reorders).
    resolved: bool = False

    def __post_init__(self) -> None:
        self._cycle_of = {f: c for c in self.cycles for f in c}

    def cycle_of(self, fid: int) -> list[int] | None:
        """The cycle (its families) that family `fid` is on, or None."""
        return self._cycle_of.get(fid)

    def cycles_among(self, ids: set[int]) -> list[list[int]]:
        """The cycles with a family in `ids`."""
        return [c for c in self.cycles if c[0] in ids]

    def family_at(self, sheet: str, row: int, col: int) -> Family | None:
        grid = self.owners.owner.get(sheet)
        if grid is None or row >= grid.shape[0] or col >= grid.shape[1]:
            return None
        fid = int(grid[row, col])
        return self.families[fid] if fid >= 0 else None

    def dependents(self, seed: set[int], within: set[int] | None = None) -> set[int]:
        """The families of `seed` and those that read one of them, directly or through others,
        taking only families in `within` when it is given."""
        out: set[int] = set()
        for fid in self.order:      # a family's dependencies come before it, or are on its cycle
            if within is not None and fid not in within:
                continue
            if fid in seed or self.families[fid].deps & out:
                # On a cycle every family reads every other, also those listed before it.
                cycle = self.cycle_of(fid) or [fid]
                out.update(f for f in cycle if within is None or f in within)
        return out

    def reading(self, areas: list[Area], among: set[int] | None = None) -> set[int]:
        """The families (of `among`, when given) that read a cell of `areas` themselves."""
        ids = range(len(self.families)) if among is None else among
        return {f for f in ids if reads_any(self.families[f], areas)}

    def ancestors(self, roots: list[int]) -> set[int]:
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            f = stack.pop()
            if f in seen:
                continue
            seen.add(f)
            stack.extend(self.families[f].deps)
        return seen


def build_graph(wb: Workbook) -> Graph:
    families, problems = build_families(wb)
    owners = _claim_all(wb, families)
    while True:     # until no more merge: a rectangle's readers can merge once it exists
        merged = rectangles(families, lambda a, b: _sources(a, owners) == _sources(b, owners))
        if len(merged) == len(families):
            break
        families = merged
        owners = _claim_all(wb, families)
    while True:
        _link(families, owners)
        # A run that reads its own cells (row k from row k-1), or runs that read each other's
        # (an SGD sheet: b in row k is row k-1's "new b", computed from row k-1's b), is a
        # recurrence: one op per cell. A cycle of single cells is a real circular reference
        # (computed by iteration where the workbook asks for it, compiler/grid.py).
        cyclic = _cyclic(families)
        loops = [f for f in families if f.id in cyclic and f.size > 1 and f.array is None]
        if not loops:
            break
        keep = [f for f in families if f not in loops]
        for f in loops:
            keep.extend(split(f, 0))
        for i, f in enumerate(keep):
            f.id = i
            f.deps = set()
        families = keep
        owners = _claim_all(wb, families)
    cycles = [sorted(c, key=lambda f: _reading_key(wb, families[f])) for c in _cycles(families)]
    cycles.sort(key=lambda c: _reading_key(wb, families[c[0]]))
    return Graph(families, owners, _topological(families, cycles), problems, cycles)


def _reading_key(wb: Workbook, fam: Family) -> tuple[int, int, int]:
    """Sheet tab order, then row, then column: the order a cycle's cells are computed in within
    an iteration (Excel's own order follows its calculation chain, which it does not document)."""
    sheet = wb.sheets.get(fam.sheet)
    return (sheet.index if sheet is not None else 0, fam.area.r1, fam.area.c1)


def _sources(fam: Family, owners: OwnerMap) -> list[frozenset[int]]:
    """Per reference, the families owning what it reads (the family's own cells excepted)."""
    out = []
    for ref in read_refs(fam.ast):
        got = {int(x) for x in owners.owners_in(ref.sheet, *ref_bounds(ref, fam))}
        out.append(frozenset(got - {fam.id}))
    return out


def _cyclic(families: list[Family]) -> set[int]:
    """Ids of the families on a dependency cycle."""
    return {f for c in _cycles(families) for f in c}


def _cycles(families: list[Family]) -> list[list[int]]:
    """The dependency cycles: each a self-loop or a strongly connected component of two or
    more families (Tarjan's algorithm, iterative: sheets can be deep)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: list[list[int]] = []
    counter = 0
    for root in (f.id for f in families):
        if root in index:
            continue
        work = [(root, iter(sorted(families[root].deps)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(families[child].deps))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in families[node].deps:
                    out.append(component)
    return out


def _claim_all(wb: Workbook, families: list[Family]) -> OwnerMap:
    owners = OwnerMap(wb)
    for f in families:
        rows, cols = f.out_cells()
        owners.claim(f.sheet, rows, cols, f.id)
    return owners


def _link(families: list[Family], owners: OwnerMap) -> None:
    for f in families:
        deps: set[int] = set()
        for ref in set(read_refs(f.ast)):     # OFFSET's base, ROW's argument: not read
            deps.update(int(x) for x in owners.owners_in(ref.sheet, *ref_bounds(ref, f)))
        f.deps = deps


def _topological(families: list[Family], cycles: list[list[int]]) -> list[int]:
    """Dependency order, each cycle taken as one node and listed as its families in order."""
    node = {f.id: f.id for f in families}      # a family's node: itself, or its cycle's first family
    members: dict[int, list[int]] = {}
    for c in cycles:
        members[c[0]] = c
        for f in c:
            node[f] = c[0]
    indegree = {f.id: 0 for f in families if node[f.id] == f.id}
    users: dict[int, list[int]] = {n: [] for n in indegree}
    for f in families:
        for d in f.deps:
            if node[d] != node[f.id]:
                indegree[node[f.id]] += 1
                users[node[d]].append(node[f.id])
    ready = [n for n, k in indegree.items() if k == 0]
    order: list[int] = []
    while ready:
        n = ready.pop()
        order.extend(members.get(n, [n]))
        for u in users[n]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    return order


def cycle_text(graph: Graph, cycle: list[int], most: int = 6) -> str:
    """'s!B1, s!C1': a cycle's cells in reading order (its first `most`, then how many in all)."""
    names = [str(graph.families[f].area) if graph.families[f].array is not None else graph.families[f].cell()
             for f in cycle]
    return ", ".join(names) if len(names) <= most else ", ".join(names[:most]) + f", … ({len(names)} cells in all)"


def reorder(wb: Workbook, graph: Graph) -> None:
    """The cycles and the order again, after dependencies were added to families (where
    computed references land)."""
    families = graph.families
    cycles = [sorted(c, key=lambda f: _reading_key(wb, families[f])) for c in _cycles(families)]
    cycles.sort(key=lambda c: _reading_key(wb, families[c[0]]))
    graph.cycles = cycles
    graph.__post_init__()
    graph.order = _topological(families, cycles)
