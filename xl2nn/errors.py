"""Errors the CLI turns into one-line messages and exit codes."""
from __future__ import annotations


class XlnnError(Exception):
    """Base class: the message is a complete sentence for the user."""

    exit_code = 2


class BadInput(XlnnError):
    """The workbook or the command line cannot be used (exit 2)."""


class UnsupportedFormula(BadInput):
    """The model needs functions or constructs xl2nn does not implement."""


class FormulaError(BadInput):
    """A formula cannot be parsed."""


class CircularReference(BadInput):
    """The model's cells depend on themselves."""
