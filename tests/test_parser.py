"""Formula parsing: precedence, references in R1C1 form, structured references."""
from __future__ import annotations

import pytest

from xl2nn.errors import FormulaError
from xl2nn.formula.ast import Binary, Call, Number, Ref, Unary, to_text
from xl2nn.formula.parser import Scope, TableInfo, parse

TABLE = TableInfo("Tbl", "data", 3, 1, 10, 4, ("Survived", "Age", "Fare", "Ones"), 1, 0)


def p(text: str, row: int = 5, col: int = 6, sheet: str = "model"):
    return parse(text, Scope(sheet, row, col, table=lambda n: TABLE if n.lower() == "tbl" else None))


def test_unary_minus_binds_tighter_than_power():
    assert p("-2^2") == Binary("^", Unary("-", Number(2.0)), Number(2.0))
    assert p("2^3^2") == Binary("^", Binary("^", Number(2.0), Number(3.0)), Number(2.0))
    assert p("1+2*3") == Binary("+", Number(1.0), Binary("*", Number(2.0), Number(3.0)))
    assert p("1&2=\"12\"").op == "="


def test_copies_of_one_formula_are_equal_in_r1c1():
    assert p("IF(D5<0,0,D5)", row=5) == p("IF(D9<0,0,D9)", row=9)
    assert p("$A$1+B5", row=5) != p("$A$1+B5", row=6)
    ref = p("B4:C4", row=5, col=6)
    assert ref == Ref("model", -1, -4, -1, -3)
    assert to_text(p("SUM($B$2:B5)*Tbl[@Age]", row=5), 5, 6, "model") == "SUM($B$2:B5)*data!$B5"


def test_structured_references():
    assert p("Tbl[Age]") == Ref("data", 4, 2, 10, 2, True, True, True, True)
    assert p("Tbl[[#This Row],[Age]:[Ones]]", row=7) == Ref("data", 0, 2, 0, 4, False, True, False, True)
    assert p("Tbl[@Fare]", row=7) == p("Tbl[[#This Row],[Fare]]", row=7)
    assert p("Tbl[#All]") == Ref("data", 3, 1, 10, 4, True, True, True, True)
    assert p("Tbl[#Headers]") == Ref("data", 3, 1, 3, 4, True, True, True, True)
    assert p("Tbl[[#Headers],[#Data],[Age]]") == Ref("data", 3, 2, 10, 2, True, True, True, True)
    # [#This Row] outside the table's rows is #VALUE!, as in Excel.
    assert to_text(p("Tbl[@Age]", row=40), 40, 6) == "#VALUE!"


def test_sheet_names_functions_and_arrays():
    node = p("'My sheet'!$A$1+_xlfn.STDEV.S(A1:A3)+SUM({1,2;3,4})")
    assert isinstance(node, Binary)
    assert node.left.left == Ref("My sheet", 1, 1, 1, 1, True, True, True, True)
    assert node.left.right == Call("STDEV.S", (Ref("model", -4, -5, -2, -5),))


@pytest.mark.parametrize("bad", ["SUM(1,", "1+", "(1", "Nope[x]", "A1 ! 2"])
def test_bad_formulas_raise(bad):
    with pytest.raises(FormulaError):
        p(bad)
