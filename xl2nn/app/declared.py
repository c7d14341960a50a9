"""Checks declared for workbooks in a TOML file: hand-written derivatives (`[[grad]]`) and
models with no Solver names (`[[model]]`), so that `xl2nn verify FILE` and `pytest --xl2nn`
run them without flags. No torch here.

An `xl2nn.toml` in a workbook's folder, or in a folder above it, or the `[tool.xl2nn]` table
of a pyproject.toml there, declares them; `workbooks` is a glob relative to that file:

    [[grad]]                              # in pyproject.toml: [[tool.xl2nn.grad]]
    workbooks = "students/*.xlsx"
    sheet = "backprop"                    # optional: where unqualified ranges are
    grad = "T4:AA53"
    of = "S4:S53"
    wrt = "C4:J53"

    [[model]]
    workbooks = "forward_pass.xlsx"
    params = "mlp!B3:D6"
    loss = "mlp!K30"

The search stops at the first folder holding a pyproject.toml or .git (the project's root).
"""
from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG = "xl2nn.toml"
KEYS = {"grad": ({"grad", "of", "wrt"}, {"sheet", "name"}),
        "model": ({"params", "loss"}, {"sheet", "name"})}


@dataclass(frozen=True)
class Declared:
    """One declared check of one workbook."""
    kind: str                   # "grad" or "model"
    fields: tuple[tuple[str, str], ...]
    source: str                 # the file and entry that declared it, for messages

    def get(self, key: str) -> str | None:
        return dict(self.fields).get(key)

    @property
    def name(self) -> str:
        """A short id: the name given, else the --grad range or the --loss cell."""
        return self.get("name") or (self.get("grad") if self.kind == "grad" else self.get("loss")) or "?"


def declared_checks(workbook: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> list[Declared]:
    """The checks declared for `workbook`, nearest file first. `root`: the folder to stop at
    (pytest's rootdir); else the first folder up holding a pyproject.toml or .git."""
    path = Path(workbook).resolve()
    stop = Path(root).resolve() if root is not None else None
    out: list[Declared] = []
    folder = path.parent
    while True:
        out += _from_file(folder / CONFIG, path, ("",))
        out += _from_file(folder / "pyproject.toml", path, ("tool", "xl2nn"))
        if folder == stop or (stop is None and ((folder / "pyproject.toml").exists() or (folder / ".git").exists())) \
                or folder.parent == folder:
            return out
        folder = folder.parent


def _from_file(config: Path, workbook: Path, table: tuple[str, ...]) -> list[Declared]:
    if not config.is_file():
        return []
    try:
        data: Any = tomllib.loads(config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config}: not valid TOML ({exc})") from None
    for key in filter(None, table):
        data = data.get(key, {}) if isinstance(data, dict) else {}
    if not isinstance(data, dict):
        raise BadInput(f"{config}: [{'.'.join(filter(None, table))}] must be a table")
    prefix = ".".join(filter(None, table + ("",)))
    out = []
    for kind, (needed, optional) in KEYS.items():
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise BadInput(f"{config}: {prefix}{kind} must be an array of tables: [[{prefix}{kind}]]")
        for i, entry in enumerate(entries, start=1):
            where = f"{config} [[{prefix}{kind}]] #{i}"
            if not isinstance(entry, dict):
                raise BadInput(f"{where}: not a table")
            unknown = set(entry) - needed - optional - {"workbooks"}
            missing = (needed | {"workbooks"}) - set(entry)
            if unknown or missing:
                parts = ([f"missing {', '.join(sorted(missing))}"] if missing else []) + \
                    ([f"unknown {', '.join(sorted(unknown))}"] if unknown else [])
                raise BadInput(f"{where}: {'; '.join(parts)} (keys: workbooks, {', '.join(sorted(needed | optional))})")
            if not all(isinstance(v, str) for v in entry.values()):
                raise BadInput(f"{where}: every value must be a string, e.g. grad = \"K4:K33\"")
            if _matches(entry["workbooks"], workbook, config.parent):
                fields = tuple(sorted((k, v) for k, v in entry.items() if k != "workbooks"))
                out.append(Declared(kind, fields, where))
    return out


def _matches(pattern: str, workbook: Path, base: Path) -> bool:
    """`pattern` (a glob relative to `base`, '/'-separated; * also crosses folders) names `workbook`."""
    try:
        rel = workbook.relative_to(base.resolve()).as_posix()
    except ValueError:
        return False
    return fnmatch.fnmatchcase(rel, pattern.strip().removeprefix("./"))
