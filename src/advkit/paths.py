"""Paths named by the user, checked once: too long, unreadable, or not writable are typed errors.

``check_path`` turns the ``OSError`` a bare ``Path.is_file()`` raises (a file name over 255 bytes,
a symlink loop, a folder without search permission) into an ``InvalidParameterError`` that names the
path and the fix; ``prepare_out_dir`` checks an output folder before any work starts.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from advkit.errors import InvalidParameterError, short

_REASONS = {
    errno.ENAMETOOLONG: "the path or one of its names is too long for the file system "
    "(at most 255 bytes per name); use a shorter name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; use a path whose parents are "
    "folders",
    errno.ELOOP: "the path holds a symbolic link loop; fix the link",
    errno.EACCES: "permission denied; use a path you can read (and write, for outputs)",
    errno.EPERM: "operation not permitted; use a path you own",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "no space left on the device; free space or write somewhere else",
}


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, f"{exc.strerror or exc}; use another path")


def path_error(name: str, path: str | os.PathLike, exc: OSError) -> InvalidParameterError:
    """The typed error for an ``OSError`` raised while using ``path`` (the parameter ``name``)."""
    return InvalidParameterError(name, os.fspath(path), f"a usable path: {_reason(exc)}")


def check_path(path: str | os.PathLike, name: str = "path") -> os.stat_result | None:
    """``os.stat(path)``, None when it does not exist; other OS errors become typed errors."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise path_error(name, path, exc) from None
    except ValueError as exc:  # an embedded NUL byte
        raise InvalidParameterError(name, short(os.fspath(path)), f"a path ({exc})") from None


def is_file(path: str | os.PathLike, name: str = "path") -> bool:
    st = check_path(path, name)
    return st is not None and stat.S_ISREG(st.st_mode)


def prepare_out_dir(path: str | os.PathLike, name: str = "--out") -> Path:
    """Create the output folder ``path`` if needed and prove it writable (a probe file is written
    and removed); raise InvalidParameterError naming the problem and the fix otherwise."""
    out = Path(path)
    st = check_path(out, name)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InvalidParameterError(
            name, str(out), "a folder for the report, but this path is an existing file; "
            "pass a folder path (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".advkit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise InvalidParameterError(
            name, str(out), "a folder path, but a part of it is an existing file; pass a path "
            "whose parents are folders") from None
    except OSError as exc:
        raise path_error(name, out, exc) from None
    return out
