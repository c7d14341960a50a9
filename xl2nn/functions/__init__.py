"""The Excel function library, one module per Excel category.

Importing this package registers every function in FUNCTIONS.
"""
from . import information, logical, lookup, math, reference, rounding, statistical, text  # noqa: F401  (registration)
from . import distributions, xlookup  # noqa: F401  (registration)
from . import arrays  # noqa: F401  (registration: Excel 365's array functions)
from .operators import binary, unary
from .registry import FUNCTIONS, VOLATILE, Context, Function
from .values import Val

__all__ = ["FUNCTIONS", "VOLATILE", "Context", "Function", "Val", "binary", "unary"]
