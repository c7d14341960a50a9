"""The contract between the function library and the tracer (compiler/hostread.py).

While training traces a model, reading a parameter-dependent number into Python or NumPy
raises HostRead: a function may catch it and compute the same thing with torch ops instead
(a lookup's position, a rounding's digits), or let it go, and the model runs in the
interpreter. Reading constants never raises.
"""
from __future__ import annotations


class HostRead(RuntimeError):
    """A parameter-dependent tensor was read on the host while tracing."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.function: str | None = None     # the innermost Excel function, set by the interpreter
        self.family: object = None           # the family being computed, set by the model

    def reason(self) -> str:
        fam = self.family
        where = f"{fam.area} (={fam.formula.lstrip('=')})" if fam is not None else "a cell"  # type: ignore[attr-defined]
        what = f"{self.function} has" if self.function else "an operator has"
        return f"{where}: {what} no torch form for parameter-dependent values here"
