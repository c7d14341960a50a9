"""Information functions: what kind of value a cell holds."""
from __future__ import annotations
