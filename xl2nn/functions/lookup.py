"""Lookup & Reference functions."""
from __future__ import annotations
