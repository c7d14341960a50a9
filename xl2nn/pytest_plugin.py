"""`pytest --xl2nn PATH [PATH...]`: every .xlsx/.xlsm under PATH as test items.

Per workbook: one item per sheet with formulas (recomputed values against cached ones), one
per Solver model (autograd against finite differences), one per check an xl2nn.toml or the
pyproject's [tool.xl2nn] declares for it (hand-written derivatives, models without Solver
names; see xl2nn.app.declared). A failure shows the cell, its formula and both numbers.

Registered through the `pytest11` entry point, so it loads in every pytest run where xl2nn is
installed: nothing is imported here until --xl2nn is given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

SUFFIXES = {".xlsx", ".xlsm"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xl2nn", "spreadsheet math checked by xl2nn")
    group.addoption("--xl2nn", action="extend", nargs="+", default=[], metavar="PATH", dest="xl2nn_paths",
                    help="collect every .xlsx/.xlsm under PATH (files or folders) as xl2nn checks: each "
                         "sheet's values, each Solver model's gradients, each check declared in an xl2nn.toml")


def pytest_configure(config: pytest.Config) -> None:
    paths = [Path(p) for p in config.getoption("xl2nn_paths")]
    if not paths:
        return
    config.stash[_ROOTS] = [p.resolve() for p in paths]
    # `pytest --xl2nn samples` collects the workbooks, not the project's testpaths as well;
    # `pytest tests --xl2nn samples` does both.
    given = [str(p) for p in paths]
    sources = getattr(pytest.Config, "ArgsSource", None)          # pytest >= 7.2
    if sources is None or config.args_source == sources.ARGS:
        config.args = list(config.args) + [a for a in given if a not in config.args]
    else:
        config.args = given
        config.args_source = sources.ARGS


_ROOTS = pytest.StashKey[list]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    roots = parent.config.stash.get(_ROOTS, None)
    if not roots or file_path.suffix.lower() not in SUFFIXES or file_path.name.startswith("~$"):
        return None                       # ~$name.xlsx: the lock file Excel keeps beside an open workbook
    here = file_path.resolve()
    if not any(here == r or r in here.parents for r in roots):
        return None
    return WorkbookFile.from_parent(parent, path=file_path)


class CheckFailed(Exception):
    """A check's failure: its message is the report (no traceback is shown)."""


class WorkbookFile(pytest.File):
    """One workbook: read, parsed and recalculated once, shared by its items."""

    _checks: Any = None

    def checks(self) -> Any:
        if self._checks is None:
            from .app.verification import WorkbookChecks
            self._checks = WorkbookChecks(self.path, self.config.rootpath)
        return self._checks

    def collect(self) -> Iterator[pytest.Item]:
        from .errors import XlnnError
        try:
            checks = self.checks()
            models = checks.solver_models()
            declared = checks.declared()
        except XlnnError as exc:
            message = str(exc)
            yield CheckItem.from_parent(self, name="read", run=lambda: _fail(message))
            return
        for name, sheet in checks.wb.sheets.items():
            if len(sheet.formulas):
                yield CheckItem.from_parent(self, name=f"values[{name}]", run=_values(checks, name))
        for m in models:
            label = getattr(m, "objective_name", None) or m.objective     # a ModelSpec, or a ModelCheck saying why not
            yield CheckItem.from_parent(self, name=f"gradients[{label}]", run=_model(checks, m))
        for d in declared:
            yield CheckItem.from_parent(self, name=f"{d.kind}[{d.name}]", run=_declared(checks, d))


class CheckItem(pytest.Item):
    def __init__(self, *, run: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run = run

    def runtest(self) -> None:
        self._run()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        from .errors import XlnnError
        if isinstance(excinfo.value, (CheckFailed, XlnnError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # The failure's head line. Not 'book.xlsx::name': pytest would read that as a dotted
        # Python name in -v listings (book::xlsx::name).
        return self.path, None, f"{self.path.name}: {self.name}"


def _fail(message: str) -> None:
    raise CheckFailed(message)


def _values(checks: Any, sheet: str) -> Callable[[], None]:
    def run() -> None:
        from .app.common import listing
        from .testing import sheet_failure
        s, = checks.values([sheet]) or [None]
        if s is not None and not s.ok:
            _fail(sheet_failure(s))
        kept = checks.not_recomputed([sheet])
        if kept:                           # not a failure, but said: these cells were not checked
            import warnings
            warnings.warn(f"{checks.path}: kept cached values, not recomputed: {listing(kept)}", stacklevel=1)
    return run


def _model(checks: Any, spec: Any) -> Callable[[], None]:
    def run() -> None:
        from .testing import model_failure
        m = checks.model(spec, must=False)
        if m.skipped:
            pytest.skip(f"{m.objective}: not checked: {m.skipped}")
        if not m.ok:
            _fail(model_failure(m))
    return run


def _declared(checks: Any, d: Any) -> Callable[[], None]:
    def run() -> None:
        from .app.verification import declared_hand_areas, declared_model
        from .testing import hand_failure, model_failure
        if d.kind == "grad":
            h = checks.hand(declared_hand_areas(checks, d))
            if not h.ok:
                _fail(hand_failure(h))
        else:
            m = checks.model(declared_model(checks, d), must=True)
            if not m.ok:
                _fail(model_failure(m))
    return run
