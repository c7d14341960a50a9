"""Excel formula text -> AST, with structured references and names resolved to ranges.

Tokenising is cached per text (copied formulas repeat it); parsing needs the formula's
own cell because references become R1C1 offsets from it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from ..cells import MAX_COL, MAX_ROW, col_number
from ..errors import FormulaError
from .ast import ArrayLit, Binary, Boolean, Call, ErrorLit, Missing, Node, Number, Ref, Text, Unary

# "#" starts a comment in a verbose pattern, hence the escapes.
_ERRORS = r"\#NULL!|\#DIV/0!|\#VALUE!|\#REF!|\#NAME\?|\#NUM!|\#N/A|\#GETTING_DATA|\#SPILL!|\#CALC!"
_SHEET = r"(?:'(?:[^']|'')+'|[A-Za-z0-9_.\u00c0-\uffff]+)!"
_CELL = r"\$?[A-Za-z]{1,3}\$?\d+"
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"]|"")*")
  | (?P<err>{_ERRORS})
  | (?P<ref>(?:{_SHEET})?(?:{_CELL}(?::{_CELL})?|\$?[A-Za-z]{{1,3}}:\$?[A-Za-z]{{1,3}}|\$?\d+:\$?\d+)
        (?![A-Za-z0-9_.(\[]))
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<func>[A-Za-z_][A-Za-z0-9_.]*(?=\())
  | (?P<name>(?:{_SHEET})?[A-Za-z_\\][A-Za-z0-9_.\\?]*)
  | (?P<op><=|>=|<>|[-+*/^&=<>%:@#])
  | (?P<punct>[(),;{{}}\[\]])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@lru_cache(maxsize=65536)
def tokenize(text: str) -> tuple[Token, ...]:
    out: list[Token] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise FormulaError(f"unexpected character {text[i]!r} at position {i + 1}")
        kind = m.lastgroup or ""
        if kind == "name" and m.end() < len(text) and text[m.end()] == "[":
            # A structured reference: Table[...] with nested brackets.
            end = _bracket_end(text, m.end())
            out.append(Token("struct", text[i:end], i))
            i = end
            continue
        if kind == "punct" and m.group() == "[":
            end = _bracket_end(text, i)   # [@Col] inside a table, without the table name
            out.append(Token("struct", text[i:end], i))
            i = end
            continue
        if kind == "name" and m.group().upper() in ("TRUE", "FALSE"):
            kind = "bool"
        if kind != "ws":
            out.append(Token(kind, m.group(), i))
        i = m.end()
    return tuple(out)


def _bracket_end(text: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "'" and i + 1 < len(text):
            i += 2                      # an escaped character inside a column name
            continue
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise FormulaError("unbalanced [ in a structured reference")


@dataclass(frozen=True)
class TableInfo:
    name: str
    sheet: str
    r1: int
    c1: int
    r2: int
    c2: int
    columns: tuple[str, ...]
    header_rows: int
    totals_rows: int


@dataclass
class Scope:
    """What the parser needs to know about the workbook around a formula."""

    sheet: str
    row: int
    col: int
    table: Callable[[str], TableInfo | None] = lambda name: None
    name: Callable[[str, str | None], Node | None] = lambda name, sheet: None
    sheet_table: Callable[[], str] = lambda: ""   # the table holding the cell, for bare [@Col]
    lambda_name: Callable[[str], str | None] = lambda name: None   # a defined name's LAMBDA text
    spill: Callable[[Ref], Ref | None] = lambda ref: None          # A1# : the range spilled from A1
    # Per formula: how many LAMBDAs became run-time lambdas (their parameters' ids), and how
    # deep named LAMBDAs are inlined (a recursive one would never end).
    counters: dict[str, int] = field(default_factory=dict)


def parse(text: str, scope: Scope) -> Node:
    text = text.strip()
    if text.startswith("="):
        text = text[1:]
    tokens = tokenize(text)
    parser = _Parser(tokens, scope, text)
    node = parser.expression()
    if parser.i != len(tokens):
        tok = tokens[parser.i]
        raise FormulaError(f"unexpected {tok.text!r} at position {tok.pos + 1}")
    return node


_COMPARE = ("=", "<>", "<", ">", "<=", ">=")


class _Parser:
    def __init__(self, tokens: tuple[Token, ...], scope: Scope, text: str,
                 bound: dict[str, Node] | None = None) -> None:
        self.t = tokens
        self.i = 0
        self.s = scope
        self.text = text
        self.bound = dict(bound or {})      # LET and LAMBDA parameters in scope -> their ASTs

    # -- helpers
    def peek(self) -> Token | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise FormulaError("the formula ends too early")
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == kind and (text is None or tok.text == text)

    def expect(self, kind: str, text: str) -> None:
        if not self.at(kind, text):
            tok = self.peek()
            where = f"{tok.text!r} at position {tok.pos + 1}" if tok else "the end"
            raise FormulaError(f"expected {text!r} but found {where}")
        self.i += 1

    # -- grammar, loosest binding first
    def expression(self) -> Node:
        left = self.concat()
        while self.peek() and self.peek().kind == "op" and self.peek().text in _COMPARE:
            op = self.take().text
            left = Binary(op, left, self.concat())
        return left

    def concat(self) -> Node:
        left = self.additive()
        while self.at("op", "&"):
            self.take()
            left = Binary("&", left, self.additive())
        return left

    def additive(self) -> Node:
        left = self.term()
        while self.peek() and self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            left = Binary(op, left, self.term())
        return left

    def term(self) -> Node:
        left = self.power()
        while self.peek() and self.peek().kind == "op" and self.peek().text in "*/":
            op = self.take().text
            left = Binary(op, left, self.power())
        return left

    def power(self) -> Node:
        left = self.unary()
        while self.at("op", "^"):
            self.take()
            left = Binary("^", left, self.unary())
        return left

    def unary(self) -> Node:
        if self.peek() and self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            return Unary(op, self.unary())
        if self.at("op", "@"):        # implicit intersection, explicit (what Excel 365 shows)
            self.take()
            return Call("SINGLE", (self.unary(),))
        node = self.primary()
        while self.at("op", "%") or self.at("op", "#"):
            if self.take().text == "#":     # A1#: the range spilled from A1 (ANCHORARRAY)
                node = self.spilled(node)
            else:
                node = Unary("%", node)
        return node

    def primary(self) -> Node:
        tok = self.take()
        k = tok.kind
        if k == "num":
            return Number(float(tok.text))
        if k == "str":
            return Text(tok.text[1:-1].replace('""', '"'))
        if k == "bool":
            return Boolean(tok.text.upper() == "TRUE")
        if k == "err":
            return ErrorLit(tok.text)
        if k == "punct" and tok.text == "(":
            node = self.expression()
            self.expect("punct", ")")
            return node
        if k == "punct" and tok.text == "{":
            return self.array()
        if k == "func":
            return self.range_tail(self.call(tok.text))
        if k in ("ref", "struct", "name"):
            return self.range_tail(self.reference(tok))
        raise FormulaError(f"unexpected {tok.text!r} at position {tok.pos + 1}")

    def range_tail(self, node: Node) -> Node:
        """The ':' operator after a reference: plain ranges join into one (A1:B2:C3); with a
        reference-returning call on either side (A1:INDEX(A1:A10,n)) it is computed, RANGE."""
        while self.at("op", ":"):
            self.take()
            tok = self.take()
            node = _span(node, self.call(tok.text) if tok.kind == "func" else self.reference(tok))
        return node

    def call(self, raw: str) -> Node:
        bound = self.bound.get(_param_key(raw))
        if isinstance(bound, _Lambda):     # a LAMBDA bound by LET, called: inlined
            return self.apply(bound, self.arguments())
        name = raw.upper()
        for prefix in ("_XLFN._XLWS.", "_XLFN.", "_XLWS."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name in _HIGHER_ORDER:
            return self.higher_order(name)
        if name == "LET":
            return self.let()
        if name == "LAMBDA":
            params, body = self.lambda_()
            if not self.at("punct", "("):
                raise FormulaError("a LAMBDA must be called where it is written, e.g. LAMBDA(x,x*2)(A1)")
            return self.invoke(params, body, self.arguments())
        if name == "ANCHORARRAY":
            args = self.arguments()
            if len(args) != 1:
                return ErrorLit("#VALUE!")
            return self.spilled(args[0])
        text = self.s.lambda_name(raw)
        if text is not None:               # a workbook-level LAMBDA name, called
            return self.apply(self.named_lambda(raw, text), self.arguments())
        return Call(name, tuple(self.arguments()))

    def spilled(self, node: Node) -> Node:
        """A1# / ANCHORARRAY(A1): the range A1 spills, or #REF! where A1 spills nothing."""
        if isinstance(node, ErrorLit):
            return node
        if not isinstance(node, Ref):
            raise FormulaError("a spill reference (#, ANCHORARRAY) of a computed reference is not supported: "
                               "its spill range is unknown")
        spilled = self.s.spill(node)
        return spilled if spilled is not None else ErrorLit("#REF!")

    def arguments(self) -> list[Node]:
        self.expect("punct", "(")
        args: list[Node] = []
        if self.at("punct", ")"):
            self.take()
            return args
        while True:
            if self.at("punct", ",") or self.at("punct", ")"):
                args.append(Missing())
            else:
                args.append(self.expression())
            if self.at("punct", ","):
                self.take()
                continue
            self.expect("punct", ")")
            return args

    # LET and LAMBDA are inlined: a parameter's uses become its value's AST, so the compiled
    # graph has no closures and copies of one formula still share one AST.
    def param(self) -> str:
        tok = self.take()
        if tok.kind != "name":
            raise FormulaError(f"expected a parameter name, found {tok.text!r}")
        return _param_key(tok.text)

    def let(self) -> Node:
        self.expect("punct", "(")
        saved = dict(self.bound)
        while True:
            key = self.param()
            self.expect("punct", ",")
            lam = self.try_lambda()         # LET(f, LAMBDA(x, ...), ...): f is called or passed on
            self.bound[key] = lam if lam is not None else self.expression()
            self.expect("punct", ",")
            nxt = self.t[self.i + 1] if self.i + 1 < len(self.t) else None
            if not (self.at("name") and nxt is not None and nxt.text == ","):
                break
        body = self.expression()
        self.expect("punct", ")")
        self.bound = saved
        return body

    def lambda_(self) -> tuple[list[str], tuple[int, int]]:
        """LAMBDA(p1, ..., body): the parameter names and the body's token span."""
        self.expect("punct", "(")
        params: list[str] = []
        while self.at("name") and self.i + 1 < len(self.t) and self.t[self.i + 1].text == ",":
            params.append(self.param())
            self.take()
        start = self.i
        depth = 0
        while True:
            tok = self.take()
            if tok.text in ("(", "{"):
                depth += 1
            elif tok.text in (")", "}"):
                if depth == 0:
                    return params, (start, self.i - 1)
                depth -= 1

    def invoke(self, params: list[str], body: tuple[int, int], args: list[Node],
               home: "_Parser | None" = None) -> Node:
        if len(args) != len(params):
            return ErrorLit("#VALUE!")
        home = home or self
        sub = _Parser(home.t[body[0]:body[1]], self.s, self.text, {**home.bound, **dict(zip(params, args))})
        node = sub.expression()
        if sub.i != len(sub.t):
            raise FormulaError(f"unexpected {sub.t[sub.i].text!r} in a LAMBDA body")
        return node

    # -- LAMBDAs passed to BYROW, BYCOL, MAKEARRAY, REDUCE, SCAN and MAP (always their last
    # argument). MAP over a body that works entry by entry is inlined with its parameter bound
    # to the whole array (MAP: an array-class identity); otherwise, and for the others, the
    # LAMBDA becomes a run-time value, Call("LAMBDA", (Text(id), ..., body)), whose parameters
    # are Call("_XLPM", (Text(id),)) placeholders the function binds to rows, columns,
    # entries or an accumulator when it runs (functions/arrays.py).
    def higher_order(self, name: str) -> Node:
        self.expect("punct", "(")
        args: list[Node] = []
        lam: _Lambda | None = None
        if not self.at("punct", ")"):
            while True:
                lam = self.try_lambda()
                if lam is None:
                    args.append(Missing() if self.at("punct", ",") or self.at("punct", ")") else self.expression())
                if lam is not None or not self.at("punct", ","):
                    break
                self.take()
        self.expect("punct", ")")
        if lam is None:
            return Call(name, tuple(args))          # no LAMBDA: the function says #VALUE!
        arity = {"BYROW": 1, "BYCOL": 1}.get(name, len(args) if name == "MAP" else 2)
        if name == "MAP" and lam.eta is None and len(lam.params) == len(args):
            node = self.apply(lam, args)
            if _entrywise(node, args):
                return Call("MAP", (node,))
        return Call(name, (*args, self.runtime(lam, arity)))

    def try_lambda(self) -> "_Lambda | None":
        """A LAMBDA value ending an argument: LAMBDA(...) written there (not called), a name LET
        bound to one, a workbook LAMBDA name, or a function named as a value (_xleta.SUM)."""
        start = self.i
        tok = self.peek()
        lam: _Lambda | None = None
        if tok is not None and tok.kind == "func" and tok.text.upper().split(".")[-1] == "LAMBDA":
            self.take()
            params, (a, b) = self.lambda_()
            lam = _Lambda(params, self.t[a:b], dict(self.bound), self.text)
        elif tok is not None and tok.kind == "name":
            bound = self.bound.get(_param_key(tok.text))
            text = None if bound is not None else self.s.lambda_name(tok.text)
            if isinstance(bound, _Lambda):
                lam = bound
            elif tok.text.upper().startswith("_XLETA."):
                lam = _Lambda([], (), {}, tok.text, eta=tok.text.upper()[len("_XLETA."):])
            elif text is not None:
                lam = self.named_lambda(tok.text, text)
            if lam is not None:
                self.take()
        if lam is not None and (self.at("punct", ",") or self.at("punct", ")")):
            return lam
        self.i = start
        return None

    def named_lambda(self, name: str, text: str) -> "_Lambda":
        sub = _Parser(tokenize(text.strip().lstrip("=")), self.s, text)
        sub.take()                         # LAMBDA (with or without _xlfn.)
        params, (a, b) = sub.lambda_()
        return _Lambda(params, sub.t[a:b], {}, name)

    def apply(self, lam: "_Lambda", args: list[Node]) -> Node:
        """A LAMBDA called where it is written: its body with the arguments' ASTs for its parameters."""
        if lam.eta is not None:
            return Call(lam.eta, tuple(args))
        if len(args) != len(lam.params):
            return ErrorLit("#VALUE!")
        depth = self.s.counters.get("depth", 0)
        if depth > 16:
            raise FormulaError(f"the LAMBDA {lam.text} calls itself (recursion is not supported)")
        self.s.counters["depth"] = depth + 1
        try:
            sub = _Parser(lam.tokens, self.s, self.text, {**lam.bound, **dict(zip(lam.params, args))})
            node = sub.expression()
        finally:
            self.s.counters["depth"] = depth
        if sub.i != len(sub.t):
            raise FormulaError(f"unexpected {sub.t[sub.i].text!r} in a LAMBDA body")
        return node

    def runtime(self, lam: "_Lambda", arity: int) -> Node:
        """The LAMBDA as a run-time value taking `arity` arguments (#VALUE! if it takes others)."""
        names = lam.params if lam.eta is None else [f"x{k}" for k in range(arity)]
        if len(names) != arity:
            return ErrorLit("#VALUE!")
        ids = []
        for p in names:
            n = self.s.counters.get("ids", 0) + 1
            self.s.counters["ids"] = n
            ids.append(f"{p}#{n}")
        holders = [Call("_XLPM", (Text(i),)) for i in ids]
        if lam.eta is not None:
            body: Node = Call(lam.eta, tuple(holders))
        else:
            sub = _Parser(lam.tokens, self.s, self.text, {**lam.bound, **dict(zip(names, holders))})
            body = sub.expression()
            if sub.i != len(sub.t):
                raise FormulaError(f"unexpected {sub.t[sub.i].text!r} in a LAMBDA body")
        return Call("LAMBDA", (*(Text(i) for i in ids), body))

    def array(self) -> Node:
        rows: list[tuple[Node, ...]] = []
        row: list[Node] = []
        while True:
            row.append(self.expression())
            tok = self.take()
            if tok.text == ",":
                continue
            rows.append(tuple(row))
            row = []
            if tok.text == ";":
                continue
            if tok.text == "}":
                return ArrayLit(tuple(rows))
            raise FormulaError(f"unexpected {tok.text!r} in an array constant")

    # -- references
    def reference(self, tok: Token) -> Node:
        if tok.kind == "ref":
            return self.a1_ref(tok.text)
        if tok.kind == "struct":
            return self.structured(tok.text)
        if tok.kind == "name":
            if _param_key(tok.text) in self.bound:
                got = self.bound[_param_key(tok.text)]
                return ErrorLit("#CALC!") if isinstance(got, _Lambda) else got   # a LAMBDA as a value
            sheet, name = _split_sheet(tok.text)
            node = self.s.name(name, sheet)
            if node is None:
                return ErrorLit("#NAME?") if sheet is None else ErrorLit("#REF!")
            return node
        raise FormulaError(f"expected a reference, found {tok.text!r}")

    def a1_ref(self, text: str) -> Ref:
        sheet, body = _split_sheet(text)
        sheet = sheet or self.s.sheet
        first, _, last = body.partition(":")
        r1, c1, ra1, ca1 = _coord(first, True)
        r2, c2, ra2, ca2 = _coord(last or first, False)
        if r1 is None:       # whole columns A:B
            r1, r2, ra1, ra2 = 1, MAX_ROW, True, True
        if c1 is None:       # whole rows 1:3
            c1, c2, ca1, ca2 = 1, MAX_COL, True, True
        row, col = self.s.row, self.s.col
        return Ref(sheet,
                   r1 if ra1 else r1 - row, c1 if ca1 else c1 - col,
                   r2 if ra2 else r2 - row, c2 if ca2 else c2 - col,
                   ra1, ca1, ra2, ca2)

    def structured(self, text: str) -> Node:
        bracket = text.index("[")
        table_name = text[:bracket]
        table = self.s.table(table_name or self.s.sheet_table())
        if table is None:
            raise FormulaError(f"unknown table {table_name!r} in {text!r}")
        specs, cols = _structured_parts(text[bracket + 1:-1])
        c1, c2 = table.c1, table.c2
        if cols:
            idx = []
            for name in cols:
                found = [i for i, c in enumerate(table.columns) if c.lower() == name.lower()]
                if not found:
                    raise FormulaError(f"table {table.name} has no column {name!r}")
                idx.append(found[0])
            c1, c2 = table.c1 + min(idx), table.c1 + max(idx)
        data_top = table.r1 + table.header_rows
        data_bottom = table.r2 - table.totals_rows
        if "#this row" in specs:
            # The formula's own row, whichever sheet the table is on.
            if not data_top <= self.s.row <= data_bottom:
                return ErrorLit("#VALUE!")
            return Ref(table.sheet, 0, c1, 0, c2, False, True, False, True)
        spans = {
            "#all": (table.r1, table.r2),
            "#data": (data_top, data_bottom),
            "#headers": (table.r1, table.r1 + table.header_rows - 1),
            "#totals": (table.r2 - table.totals_rows + 1, table.r2),
        }
        chosen = [spans[s] for s in specs] or [spans["#data"]]
        r1 = min(a for a, _ in chosen)
        r2 = max(b for _, b in chosen)
        if r2 < r1:
            return ErrorLit("#REF!")   # e.g. #Totals of a table without a totals row
        return Ref(table.sheet, r1, c1, r2, c2, True, True, True, True)


# Functions taking a LAMBDA as their last argument.
_HIGHER_ORDER = frozenset({"MAP", "BYROW", "BYCOL", "MAKEARRAY", "REDUCE", "SCAN"})


@dataclass(eq=False)
class _Lambda(Node):
    """A LAMBDA while parsing: its parameters, its body's tokens and the LET bindings it sees
    (or `eta`, a function named as a value). Never left in an AST."""

    params: list[str]
    tokens: tuple[Token, ...]
    bound: dict[str, Node]
    text: str
    eta: str | None = None


def _entrywise(node: Node, arrays: list[Node]) -> bool:
    """Is every use of `arrays` in `node` entry by entry (operators, value-class arguments)?"""
    from ..functions import FUNCTIONS    # the parameter classes; the function table needs no parser
    if any(node is a for a in arrays):
        return True
    if isinstance(node, Binary):
        return _entrywise(node.left, arrays) and _entrywise(node.right, arrays)
    if isinstance(node, Unary):
        return _entrywise(node.arg, arrays)
    if isinstance(node, Call):
        fn = FUNCTIONS.get(node.name)
        for i, arg in enumerate(node.args):
            if not _entrywise(arg, arrays):
                return False
            if _mentions(arg, arrays) and (fn is None or fn.arg_class(i) not in "VP"):
                return False
    return True


def _mentions(node: Node, arrays: list[Node]) -> bool:
    from .ast import walk
    return any(n is a for n in walk(node) for a in arrays)


def _param_key(text: str) -> str:
    """LET/LAMBDA parameter names: case-insensitive, saved by Excel with a _xlpm. prefix."""
    low = text.lower()
    return low[len("_xlpm."):] if low.startswith("_xlpm.") else low


def _split_sheet(text: str) -> tuple[str | None, str]:
    if "!" not in text:
        return None, text
    sheet, _, body = text.rpartition("!")
    if sheet.startswith("'"):
        sheet = sheet[1:-1].replace("''", "'")
    return sheet, body


_COORD = re.compile(r"^(\$?)([A-Za-z]{1,3})?(\$?)(\d+)?$")


def _coord(text: str, first: bool) -> tuple[int | None, int | None, bool, bool]:
    m = _COORD.match(text)
    if not m:
        raise FormulaError(f"bad reference {text!r}")
    col_abs, letters, row_abs, digits = m.groups()
    if letters is None:     # a row-only part like $3: the $ sits in group 1
        return int(digits), None, bool(col_abs or row_abs), False
    col = col_number(letters)
    if digits is None:
        return None, col, False, bool(col_abs)
    return int(digits), col, bool(row_abs), bool(col_abs)


def _structured_parts(inner: str) -> tuple[list[str], list[str]]:
    """'[#This Row],[SibSp]:[Ones]' -> (['#this row'], ['SibSp', 'Ones'])."""
    specs: list[str] = []
    cols: list[str] = []
    inner = inner.strip()
    if inner.startswith("@"):
        specs.append("#this row")
        inner = inner[1:].strip()
    if not inner:
        return specs, cols
    if not inner.startswith("["):
        items = [inner]
    else:
        items = []
        i = 0
        while i < len(inner):
            if inner[i] == "[":
                end = _bracket_end(inner, i)
                items.append(inner[i + 1:end - 1])
                i = end
            elif inner[i] == ":":
                items.append(":")
                i += 1
            else:
                i += 1   # commas and spaces between items
    for item in items:
        if item == ":":
            continue
        unescaped = re.sub(r"'(.)", r"\1", item).strip()
        if unescaped.startswith("#"):
            specs.append(unescaped.lower())
        else:
            cols.append(unescaped)
    return specs, cols


def _span(a: Node, b: Node) -> Node:
    """The ':' operator between two references: the block from a's first corner to b's last;
    between anything else (a reference-returning call), RANGE, computed with the formula."""
    if not (isinstance(a, Ref) and isinstance(b, Ref)):
        return Call("RANGE", (a, b))
    if a.sheet != b.sheet:
        raise FormulaError("a range cannot span two sheets")
    return Ref(a.sheet, a.r1, a.c1, b.r2, b.c2, a.r1_abs, a.c1_abs, b.r2_abs, b.c2_abs)
