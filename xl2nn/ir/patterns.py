"""Spreadsheet idioms recognised in a formula's syntax tree."""
from __future__ import annotations

from ..formula.ast import Binary, Call, Node, Number


def is_relu(node: Node) -> bool:
    """IF(x<0,0,x), IF(x>0,x,0) (and with <=, >=), MAX(0,x), MAX(x,0)."""
    if isinstance(node, Call) and node.name == "IF" and len(node.args) == 3:
        c, a, b = node.args
        if isinstance(c, Binary) and isinstance(c.right, Number) and c.right.value == 0:
            x = c.left
            if c.op in ("<", "<=") and a == Number(0.0) and b == x:
                return True
            if c.op in (">", ">=") and a == x and b == Number(0.0):
                return True
    if isinstance(node, Call) and node.name == "MAX" and len(node.args) == 2:
        return Number(0.0) in node.args
    return False


__all__ = ["is_relu"]
