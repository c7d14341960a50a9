"""The Excel function library, one module per Excel category.

Importing this package registers every function in FUNCTIONS.
"""
from . import logical, math, statistical  # noqa: F401  (registration)
from .operators import binary, unary
from .registry import FUNCTIONS, Context, Function
from .values import Val

__all__ = ["FUNCTIONS", "Context", "Function", "Val", "binary", "unary"]
