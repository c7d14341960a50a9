"""The dependency graph between families, and the order to evaluate them in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import grown, unique
from ..cells import MAX_COL, MAX_ROW, Area, cell_name
from ..errors import CircularReference
from ..formula.ast import Ref, refs
from ..reader.workbook import Workbook
from .families import Family, ParseProblem, build_families, rectangles, split


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
    """Does any reference's block (over the whole family) overlap one of `areas`?"""
    for ref in set(refs(fam.ast)):
        r1, c1, r2, c2 = ref_bounds(ref, fam)
        for a in areas:
            if a.sheet == ref.sheet and r1 <= a.r2 and a.r1 <= r2 and c1 <= a.c2 and a.c1 <= c2:
                return True
    return False


@dataclass
class Graph:
    families: list[Family]
    owners: OwnerMap
    order: list[int]
    problems: list[ParseProblem]

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
        for fid in self.order:      # a family's dependencies come before it
            if within is not None and fid not in within:
                continue
            if fid in seed or self.families[fid].deps & out:
                out.add(fid)
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
        # recurrence: one op per cell. A cycle of single cells is a real circular reference.
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
    return Graph(families, owners, _topological(families, wb.path), problems)


def _sources(fam: Family, owners: OwnerMap) -> list[frozenset[int]]:
    """Per reference, the families owning what it reads (the family's own cells excepted)."""
    out = []
    for ref in refs(fam.ast):
        got = {int(x) for x in owners.owners_in(ref.sheet, *ref_bounds(ref, fam))}
        out.append(frozenset(got - {fam.id}))
    return out


def _cyclic(families: list[Family]) -> set[int]:
    """Ids of the families on a dependency cycle: a self-loop or a strongly connected
    component of two or more (Tarjan's algorithm, iterative: sheets can be deep)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: set[int] = set()
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
                    out.update(component)
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
        for ref in set(refs(f.ast)):
            deps.update(int(x) for x in owners.owners_in(ref.sheet, *ref_bounds(ref, f)))
        f.deps = deps


def _topological(families: list[Family], label: str) -> list[int]:
    indegree = {f.id: 0 for f in families}
    users: dict[int, list[int]] = {f.id: [] for f in families}
    for f in families:
        for d in f.deps:
            if d != f.id:
                indegree[f.id] += 1
                users[d].append(f.id)
    self_loops = [f for f in families if f.id in f.deps]
    if self_loops:
        _raise_cycle(families, [self_loops[0].id], label)
    ready = [fid for fid, n in indegree.items() if n == 0]
    order: list[int] = []
    while ready:
        fid = ready.pop()
        order.append(fid)
        for u in users[fid]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    if len(order) != len(families):
        left = {fid for fid, n in indegree.items() if n > 0}
        _raise_cycle(families, _find_cycle(families, left), label)
    return order


def _find_cycle(families: list[Family], left: set[int]) -> list[int]:
    start = min(left)
    path: list[int] = []
    seen: dict[int, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in families[node].deps if d in left)
    return path[seen[node]:]


def _raise_cycle(families: list[Family], cycle: list[int], label: str) -> None:
    names = [cell_name(families[i].sheet, int(families[i].rows[0]), int(families[i].cols[0])) for i in cycle]
    raise CircularReference(f"{label}: circular reference: " + " -> ".join(names + names[:1]))
