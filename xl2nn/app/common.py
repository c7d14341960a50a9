"""Helpers shared by the use cases and the CLI; no torch here."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cells import Area
from ..errors import BadInput
from ..ranges import ranges_text
from ..writer.atomic import output_problem


def default_output(src: Path, tag: str = "trained") -> Path:
    """titanic.xlsx -> titanic.trained.xlsx beside it; the suffix is kept (an .xlsm stays .xlsm,
    since its content type says macro-enabled and Excel refuses a mismatched suffix)."""
    return src.with_name(f"{src.stem}.{tag}{src.suffix}")


def workbook_output(src: Path, given: str | os.PathLike[str] | None, tag: str = "trained") -> Path:
    """The new workbook to write: `given`, or the default beside `src`; a bad one is BadInput."""
    out = Path(given) if given else default_output(src, tag)
    why = output_problem(out, src)
    if why:
        raise BadInput(f"{out}: {why}")
    macro = {".xlsm", ".xltm"}
    if (src.suffix.lower() in macro) != (out.suffix.lower() in macro):
        raise BadInput(f"{out}: keep the input's kind of suffix ({src.suffix}); Excel refuses a "
                       f"{'macro-enabled' if src.suffix.lower() in macro else 'macro-free'} workbook "
                       f"saved as {out.suffix or 'no suffix'}")
    return out


def listing(by_name: Mapping[str, Sequence[str | Area]], most: int = 4) -> str:
    """'VLOOKUP (s!K1:K9, s!M2), FOO (s!A1 and 3 more)': each function with its cells, merged
    into rectangles first (400 single OFFSET cells read 's!B2:B401'), at most `most` each."""
    return ", ".join(f"{name} ({ranges_text(areas, most)})" for name, areas in by_name.items())


def warning_categories() -> tuple[type[Warning], ...]:
    """The warnings xl2nn issues that the CLI shows every time, one line each (imports torch)."""
    from ..compiler.lower import ParameterFormulaWarning, SnapshotWarning
    from ..train import CompileWarning
    return SnapshotWarning, CompileWarning, ParameterFormulaWarning
