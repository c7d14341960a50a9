"""Text functions: the ones a data-preparation column uses."""
from __future__ import annotations
