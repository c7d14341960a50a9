"""Which references a formula reads, and which only locate something.

OFFSET(base, rows, cols) reads the cells it lands on and its position arguments, never
`base` itself; ROW(A5) reads nothing of A5; in A1:INDEX(A1:A10,n) the cells read are
A1..An, not A1:A10. The dependency graph counts only what is read: a plain Ref in a read
position is a dependency as it stands, a reference-returning call read as a value (a
*target*) depends on where it lands, which compiler/references.py works out.
"""
from __future__ import annotations

from collections.abc import Iterator

from ..formula.ast import ArrayLit, Binary, Call, Node, Ref, Unary
from ..functions.reference import PASSING_CALLS, POSITION_CALLS, REFERENCE_CALLS

READ, LOCATE = "read", "locate"


def _reference_slots(call: Call) -> set[int]:
    """The arguments of `call`, computed where a reference is wanted, that it takes as
    references (their positions), not as values."""
    if call.name in ("OFFSET",):
        return {0}
    if call.name == "RANGE":
        return {0, 1}
    if call.name == "INDEX":
        return {0}
    if call.name == "CHOOSE":
        return set(range(1, len(call.args)))
    if call.name == "IF":
        return {1, 2}
    return set()


def is_reference_call(node: Node) -> bool:
    """A call that returns a reference whose target is worked out when computed."""
    return isinstance(node, Call) and node.name in REFERENCE_CALLS


def _walk(node: Node, mode: str) -> Iterator[tuple[Node, str]]:
    """Every node with how it is used: READ (its value) or LOCATE (its position only)."""
    yield node, mode
    if isinstance(node, Binary):
        yield from _walk(node.left, READ)
        yield from _walk(node.right, READ)
    elif isinstance(node, Unary):
        yield from _walk(node.arg, READ)
    elif isinstance(node, ArrayLit):
        for row in node.rows:
            for item in row:
                yield from _walk(item, READ)
    elif isinstance(node, Call):
        yield from _call_args(node, mode)


def _call_args(call: Call, mode: str) -> Iterator[tuple[Node, str]]:
    if call.name in POSITION_CALLS:
        slots = {0}
    elif call.name in ("ROWS", "COLUMNS") and call.args and is_reference_call(call.args[0]):
        slots = {0}                                 # the size of a computed reference
    elif call.name in REFERENCE_CALLS or (mode == LOCATE and call.name in PASSING_CALLS):
        slots = _reference_slots(call)
    else:
        slots = set()
    for i, arg in enumerate(call.args):
        yield from _walk(arg, LOCATE if i in slots else READ)


def read_refs(ast: Node) -> list[Ref]:
    """The plain references whose cells the formula reads, in walk order."""
    return [n for n, mode in _walk(ast, READ) if isinstance(n, Ref) and mode == READ]


def targets(ast: Node) -> list[Call]:
    """The reference-returning calls whose cells the formula reads (OFFSET(...) in a SUM, the
    ':' operator in SUM(A1:INDEX(...))), in walk order; each counts once."""
    return list(dict.fromkeys(n for n, mode in _walk(ast, READ) if mode == READ and is_reference_call(n)))


def has_targets(ast: Node) -> bool:
    return any(mode == READ and is_reference_call(n) for n, mode in _walk(ast, READ))


__all__ = ["has_targets", "is_reference_call", "read_refs", "targets"]
