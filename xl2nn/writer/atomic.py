"""Writing a new file so that it appears whole or not at all (interrupts, full disks, errors)."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def same_file(a: Path, b: Path) -> bool:
    """Whether a and b name one file (links and other spellings of a path included)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def output_problem(dst: Path, src: Path | None = None) -> str | None:
    """Why `dst` cannot be written as a new output (of the input `src`), or None: the one check
    every command's output goes through."""
    if not Path(dst).parent.is_dir():
        return f"folder {Path(dst).parent} does not exist"
    if src is not None and same_file(src, dst):
        return "the output must be a new file, not the input"
    return None


@contextmanager
def atomic_output(dst: Path) -> Iterator[BinaryIO]:
    """Yield a file in dst's folder; on success it is fsynced and renamed to dst, on any
    error (or Ctrl-C) it is removed and dst is left as it was."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _new_file_mode(dst))  # mkstemp makes 0600: use the usual mode
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(dst.parent)


def _new_file_mode(dst: Path) -> int:
    try:
        return dst.stat().st_mode & 0o777  # replacing a file: keep its permissions
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
