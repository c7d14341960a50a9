"""Formula AST. References are stored in R1C1 form, so copies of one formula are equal.

A relative coordinate holds the offset from the formula's own cell; an absolute one
the row or column number. Two cells whose formulas have equal ASTs form one family.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cells import MAX_COL, MAX_ROW, Area, a1, col_letters, quote_sheet


class Node:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Number(Node):
    value: float


@dataclass(frozen=True, slots=True)
class Text(Node):
    value: str


@dataclass(frozen=True, slots=True)
class Boolean(Node):
    value: bool


@dataclass(frozen=True, slots=True)
class ErrorLit(Node):
    code: str


@dataclass(frozen=True, slots=True)
class Missing(Node):
    """An omitted argument, as in IF(A1,,2)."""


@dataclass(frozen=True, slots=True)
class Ref(Node):
    sheet: str
    r1: int
    c1: int
    r2: int
    c2: int
    r1_abs: bool = False
    c1_abs: bool = False
    r2_abs: bool = False
    c2_abs: bool = False

    @property
    def is_cell(self) -> bool:
        return (self.r1, self.c1, self.r1_abs, self.c1_abs) == (self.r2, self.c2, self.r2_abs, self.c2_abs)

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns of the referenced block (the same from every cell)."""
        return self.r2 - self.r1 + 1 if self.r1_abs == self.r2_abs else -1, \
            self.c2 - self.c1 + 1 if self.c1_abs == self.c2_abs else -1

    def bounds(self, rows, cols):
        """(top, left, bottom, right) of the block read from each cell (rows[i], cols[i]):
        NumPy arrays of cells, or one cell's ints."""
        r1 = self.r1 if self.r1_abs else rows + self.r1
        r2 = self.r2 if self.r2_abs else rows + self.r2
        c1 = self.c1 if self.c1_abs else cols + self.c1
        c2 = self.c2 if self.c2_abs else cols + self.c2
        return np.minimum(r1, r2), np.minimum(c1, c2), np.maximum(r1, r2), np.maximum(c1, c2)

    def area_at(self, row: int, col: int) -> Area:
        """The block this reference means in the cell (row, col)."""
        r1 = self.r1 if self.r1_abs else row + self.r1
        r2 = self.r2 if self.r2_abs else row + self.r2
        c1 = self.c1 if self.c1_abs else col + self.c1
        c2 = self.c2 if self.c2_abs else col + self.c2
        return Area(self.sheet, min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2))

    def a1_at(self, row: int, col: int, home: str | None = None) -> str:
        area = self.area_at(row, col)
        prefix = "" if self.sheet == home else quote_sheet(self.sheet) + "!"
        d = {True: "$", False: ""}
        c1 = d[self.c1_abs] + col_letters(area.c1)
        c2 = d[self.c2_abs] + col_letters(area.c2)
        r1 = d[self.r1_abs] + str(area.r1)
        r2 = d[self.r2_abs] + str(area.r2)
        if area.r1 == 1 and area.r2 == MAX_ROW:
            return f"{prefix}{c1}:{c2}"
        if area.c1 == 1 and area.c2 == MAX_COL:
            return f"{prefix}{r1}:{r2}"
        if self.is_cell:
            return f"{prefix}{c1}{r1}"
        return f"{prefix}{c1}{r1}:{c2}{r2}"


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str          # "-", "+" or "%" (postfix percent)
    arg: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class ArrayLit(Node):
    rows: tuple[tuple[Node, ...], ...]


def walk(node: Node):
    """Every node of a tree, parents first."""
    yield node
    if isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Unary):
        yield from walk(node.arg)
    elif isinstance(node, Binary):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, ArrayLit):
        for row in node.rows:
            for item in row:
                yield from walk(item)


def refs(node: Node) -> list[Ref]:
    return [n for n in walk(node) if isinstance(n, Ref)]


_PRECEDENCE = {"=": 1, "<>": 1, "<": 1, ">": 1, "<=": 1, ">=": 1, "&": 2, "+": 3, "-": 3,
               "*": 4, "/": 4, "^": 5}


def to_text(node: Node, row: int, col: int, home: str | None = None, _outer: int = 0) -> str:
    """Formula text for the cell (row, col), plain A1 references; `home` sheet left implicit."""
    def sub(n: Node, prec: int = 0) -> str:
        return to_text(n, row, col, home, prec)
    if isinstance(node, Number):
        v = node.value
        return repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(node, Text):
        return '"' + node.value.replace('"', '""') + '"'
    if isinstance(node, Boolean):
        return "TRUE" if node.value else "FALSE"
    if isinstance(node, ErrorLit):
        return node.code
    if isinstance(node, Missing):
        return ""
    if isinstance(node, Ref):
        return node.a1_at(row, col, home)
    if isinstance(node, Call) and node.name == "RANGE" and len(node.args) == 2:   # the ':' operator
        return f"{sub(node.args[0], 7)}:{sub(node.args[1], 7)}"
    if isinstance(node, Call) and node.name == "_XLPM" and node.args and isinstance(node.args[0], Text):
        return node.args[0].value.split("#")[0]        # a run-time LAMBDA's parameter, by its name
    if isinstance(node, Call) and node.name == "LAMBDA" and all(isinstance(a, Text) for a in node.args[:-1]):
        return f"LAMBDA({','.join([a.value.split('#')[0] for a in node.args[:-1]] + [sub(node.args[-1])])})"
    if isinstance(node, Call):
        return f"{node.name}({','.join(sub(a) for a in node.args)})"
    if isinstance(node, Unary):
        inner = sub(node.arg, 6)
        return inner + "%" if node.op == "%" else node.op + inner
    if isinstance(node, Binary):
        p = _PRECEDENCE[node.op]
        text = f"{sub(node.left, p)}{node.op}{sub(node.right, p + 1)}"
        return f"({text})" if p < _outer else text
    if isinstance(node, ArrayLit):
        return "{" + ";".join(",".join(sub(x) for x in r) for r in node.rows) + "}"
    raise TypeError(node)


__all__ = ["Node", "Number", "Text", "Boolean", "ErrorLit", "Missing", "Ref", "Call", "Unary",
           "Binary", "ArrayLit", "walk", "refs", "to_text", "a1"]
