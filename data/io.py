"""Atomic file writes: the one way every dvsa writer puts a file on disk.

A file is written to a temporary name in the same folder, flushed and fsynced, renamed over the target with
`os.replace` (atomic on POSIX and Windows), and then the folder itself is fsynced so the rename survives a crash.
A reader therefore sees either the old file or the new one, never half of one; a failure leaves the old file
(if any) in place and no temporary file behind.

    atomic_write_text(path, text)
    atomic_write_json(path, obj)              # numbers from numpy / tensors, Paths and dataclasses are converted
    with atomic_open(path, "w") as f: ...      # streamed writes (JSON Lines), committed only on success
    atomic_save_npy(path, array)
    commit_dir(tmp_dir, final_dir)             # a folder written in full under a temporary name
    check_writable(path, kind="file"|"dir")    # before long work: fail at once, not after hours

Every write failure (no space, read-only folder, a file where a folder should be ...) is an `OutputError` that
names the path and the reason (`dvsa.data.errors`), never a bare OSError half-way through a file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from dvsa.data.errors import OutputError

# free bytes below which an output is refused before the work starts
MIN_FREE_BYTES = 1 << 20

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the device",
    errno.EACCES: "read-only or not permitted",
    errno.EPERM: "read-only or not permitted",
    errno.EROFS: "read-only or not permitted (read-only file system)",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "an existing folder, expected a file",
    errno.EEXIST: "a file stands where a folder is needed",
    errno.ENOENT: "the folder does not exist",
    errno.EIO: "input/output error on the device",
}
# errno values that mean "this output cannot be written" when raised inside an atomic_open body
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                           errno.EIO})


def write_reason(e: OSError) -> str:
    """A short human reason for a failed write."""
    return _REASONS.get(e.errno, e.strerror or type(e).__name__)


def output_error(path: str | os.PathLike, e: OSError) -> OutputError:
    """`OutputError` "PATH: cannot write: REASON" for an OSError met while writing `path` (errno kept)."""
    if isinstance(e, OutputError):
        return e
    err = OutputError(f"{path}: cannot write: {write_reason(e)}")
    err.errno = e.errno
    return err


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, kind: str = "file") -> Path:
    """Check, before long work starts, that `path` can be written; returns it, else raises `OutputError`.

    kind "file": `path` is not an existing folder and its folder exists or can be created; "dir": `path` is a
    folder or can be created. The nearest existing folder must be a folder (not a file), writable (os.access and
    a real probe file created and removed) and have free space (> MIN_FREE_BYTES). Nothing is created.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"check_writable: kind must be 'file' or 'dir', not {kind!r}")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise OutputError(f"{path}: cannot write: an existing folder, expected a file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: cannot write: is a file, not a folder")
    folder = _existing_ancestor(path if kind == "dir" else path.parent)
    where = "" if folder in (path, path.parent) else f" ({folder})"
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write: read-only folder{where}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dvsa-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = "read-only folder" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else write_reason(e)
        raise OutputError(f"{path}: cannot write: {reason}{where}") from None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free <= MIN_FREE_BYTES:
        raise OutputError(f"{path}: cannot write: no space left ({free} bytes free{where or f' in {folder}'})")
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it is fsynced and renamed to `path`,
    on an exception it is removed and `path` is left as it was. `mode` is "w" or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if isinstance(e, (FileExistsError, NotADirectoryError)) or e.errno in (errno.EEXIST, errno.ENOTDIR):
            raise OutputError(f"{path}: cannot write: {_existing_ancestor(path.parent)} is a file, "
                              f"not a folder") from None
        raise output_error(path, e) from None
    mine = True  # an OSError from our own flush / fsync / rename (not from the caller's body) is a write failure
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would have given
            mine = False
            yield f
            mine = True
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError) and (mine or e.errno in _WRITE_ERRNOS):
            raise output_error(path, e) from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` for what dvsa writes: numpy / torch numbers and arrays, Paths, dataclasses."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, **kw) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default, **kw) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """`write(f)` into the atomic temporary file (for writers that take a file object: torch.save, Image.save)."""
    with atomic_open(path, mode) as f:
        write(f)
    return Path(path)


def commit_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a fully written folder `tmp` to `final` (same parent) and fsync the parent."""
    try:
        os.replace(tmp, final)
    except OSError as e:
        raise output_error(final, e) from None
    fsync_dir(Path(final).parent)
