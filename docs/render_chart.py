"""Render the trace sheet's chart of a trained workbook to PNG with LibreOffice.

    python3 docs/render_chart.py titanic.trained.xlsx docs/sgd_steps_chart.png [SHEET]

Run it with a Python that has LibreOffice's `uno` module (on Debian/Ubuntu the system
python3 with python3-uno). It starts a private headless soffice, opens the workbook, and
exports the chart on SHEET (default sgd_steps) through LibreOffice's graphic export filter:
the picture is LibreOffice's own rendering of the chart xl2nn wrote.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uno                                            # LibreOffice's Python bridge
from com.sun.star.beans import PropertyValue


def _props(**kw) -> tuple:
    out = []
    for k, v in kw.items():
        p = PropertyValue()
        p.Name, p.Value = k, v
        out.append(p)
    return tuple(out)


def _connect(pipe: str, proc: subprocess.Popen):
    ctx = uno.getComponentContext()
    resolver = ctx.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", ctx)
    for _ in range(120):
        if proc.poll() is not None:
            raise SystemExit(f"soffice exited with {proc.returncode}")
        try:
            return resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        except Exception:                                  # not listening yet
            time.sleep(0.5)
    raise SystemExit("soffice did not start")


def render(src: Path, png: Path, sheet: str = "sgd_steps", width: int = 1200, height: int = 600) -> None:
    work = Path(tempfile.mkdtemp(prefix="xl2nn-chart-"))
    pipe = f"xl2nn_chart_{os.getpid()}"
    proc = subprocess.Popen([shutil.which("soffice") or "soffice", f"-env:UserInstallation={work.as_uri()}",
                             "--headless", "--norestore", "--nologo", f"--accept=pipe,name={pipe};urp;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ctx = _connect(pipe, proc)
        desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        doc = desktop.loadComponentFromURL(src.resolve().as_uri(), "_blank", 0, _props(Hidden=True))
        try:
            page = doc.Sheets.getByName(sheet).DrawPage
            if page.Count == 0:
                raise SystemExit(f"{src}: sheet {sheet!r} has no chart")
            export = ctx.ServiceManager.createInstanceWithContext("com.sun.star.drawing.GraphicExportFilter", ctx)
            export.setSourceDocument(page.getByIndex(0))
            export.filter(_props(URL=png.resolve().as_uri(), MediaType="image/png",
                                 FilterData=uno.Any("[]com.sun.star.beans.PropertyValue",
                                                    _props(PixelWidth=width, PixelHeight=height))))
        finally:
            doc.close(True)
        try:
            desktop.terminate()
        except Exception:                                  # the bridge drops as soffice exits
            pass
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    render(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])
