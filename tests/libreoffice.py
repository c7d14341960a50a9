"""LibreOffice headless as an independent spreadsheet engine that really recalculates: the judge the
tests, the sample builder and the benchmarks compare against (not part of xl2nn itself).

``recalculate`` writes an .xlsx copy of a workbook whose cached values are the ones
LibreOffice computed, so they can be compared with xl2nn's own evaluation.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

__all__ = ["find_soffice", "recalculate", "recalculate_many", "with_libreoffice_values"]

# By default LibreOffice trusts the cached values stored in xlsx/ods files and
# recalculates nothing, so a plain --convert-to would just copy them back.  A
# throwaway profile with the load-time recalc modes set to 0 ("always") forces
# every formula to be recomputed on load.
_REGISTRY_XCU = """\
<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Calc/Formula/Load">\
<prop oor:name="OOXMLRecalcMode" oor:op="fuse"><value>0</value></prop></item>
<item oor:path="/org.openoffice.Office.Calc/Formula/Load">\
<prop oor:name="ODFRecalcMode" oor:op="fuse"><value>0</value></prop></item>
</oor:items>
"""


def find_soffice() -> str | None:
    """Path of ``soffice`` (or ``libreoffice``) on PATH, else None."""
    for name in ("soffice", "libreoffice"):
        path = shutil.which(name)
        if path:
            return path
    return None


def recalculate(src: Path, dst: Path, *, timeout: float = 180.0) -> Path:
    """Write to ``dst`` an .xlsx copy of ``src`` with every formula recalculated by LibreOffice."""
    return recalculate_many([(src, dst)], timeout=timeout)[0]


def with_libreoffice_values(path: Path) -> Path:
    """Give the formula cells of ``path`` (an openpyxl file: no cached values) LibreOffice's
    values as their cached values, in place. LibreOffice's own saved copy is not kept (it
    renames or drops parts a test may be about: hidden names, the active sheet); only its
    values are taken, as the sample builder does."""
    from xl2nn.reader import read_workbook
    from xl2nn.writer import patch_workbook
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="xl2nn-lo-") as tmp:
        lo = recalculate(path, Path(tmp) / path.name)
        ours, theirs = read_workbook(path), read_workbook(lo)
        updates = {}
        for name, sheet in ours.sheets.items():
            cells = set(sheet.formulas)
            for area, _ in sheet.arrays:
                cells.update(area.cells())
            updates[name] = {pos: theirs.sheets[name].values.get(pos) for pos in cells}
        out = Path(tmp) / ("patched" + path.suffix)
        patch_workbook(path, out, updates)
        shutil.copyfile(out, path)
    return path


def recalculate_many(pairs: list[tuple[Path, Path]], *, timeout: float = 180.0) -> list[Path]:
    """Recalculate several ``(src, dst)`` pairs with a single soffice process.

    Startup dominates the cost, so converting many files in one invocation is
    much cheaper than calling :func:`recalculate` for each.  Returns the dsts.
    """
    soffice = find_soffice()
    if soffice is None:
        raise RuntimeError("LibreOffice (soffice) was not found on PATH.")
    pairs = [(Path(s), Path(d)) for s, d in pairs]
    if not pairs:
        return []
    for src, dst in pairs:
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such file")
        if dst.exists() and dst.resolve() == src.resolve():
            raise ValueError(f"{dst}: destination is the source file, which must not be modified")

    work = Path(tempfile.mkdtemp(prefix="xl2nn-lo-"))
    try:
        profile, indir, outdir = work / "profile", work / "in", work / "out"
        (profile / "user").mkdir(parents=True)
        (profile / "user" / "registrymodifications.xcu").write_text(_REGISTRY_XCU, encoding="utf-8")
        indir.mkdir()
        outdir.mkdir()
        # soffice only ever sees private copies with distinct, plain names: the
        # sources stay untouched (no lock files next to them), sources sharing a
        # stem cannot collide in OUTDIR, and odd characters never reach its CLI.
        inputs = []
        for i, (src, _) in enumerate(pairs):
            copy = indir / f"in{i}{src.suffix.lower()}"
            shutil.copyfile(src, copy)
            inputs.append(copy)

        cmd = [
            soffice,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(outdir),
            *map(str, inputs),
        ]
        names = ", ".join(str(src) for src, _ in pairs)
        rc, err = _run(cmd, timeout, cwd=work, what=names)
        if rc != 0:
            raise RuntimeError(f"LibreOffice exited {rc} converting {names}: {_tail(err) or 'no output'}")
        results = []
        for (src, dst), copy in zip(pairs, inputs):
            produced = outdir / (copy.stem + ".xlsx")
            if not produced.is_file():
                raise RuntimeError(
                    f"LibreOffice did not convert {src} (exit {rc}): {_tail(err) or 'no output'}"
                )
            dst.parent.mkdir(parents=True, exist_ok=True)
            # Stage next to dst first: os.replace is atomic only within one filesystem.
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
            os.close(fd)
            try:
                shutil.copyfile(produced, tmp)
                os.replace(tmp, dst)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            results.append(dst)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(cmd: list[str], timeout: float, cwd: Path, what: str) -> tuple[int, str]:
    """Run soffice; on timeout kill its whole process group (the launcher forks soffice.bin)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise RuntimeError(f"LibreOffice timed out after {timeout:g} s: {what}") from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    return proc.returncode, (err or "") + (out or "")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(text: str, limit: int = 300) -> str:
    """Last non-empty part of soffice's output, squeezed onto one line."""
    line = " ".join(text.split())
    return line[-limit:]
