"""Hashes and safe writes: how every stage puts bytes on disk.

- A file goes to a temporary name next to its destination (`.NAME.XXXX.tmp`) and is renamed into
  place, so a failure never leaves a half-written file under a final name (DVC does not clean up
  after a failed stage). A folder is built the same way and swapped in whole (`atomic_dir`): one
  atomic exchange where the filesystem has it (Linux renameat2), else two renames, the older copy
  kept as `.NAME.old` in between and deleted only once the new one is in place.
- The process writing a temporary file or folder holds a lock on it (flock); the next write to
  the same destination deletes the temporaries whose writer is gone (killed), and puts back a
  `.NAME.old` whose swap was cut short, so nothing stale piles up and nothing is lost.
- Outputs get the permissions the umask gives, as any other file would (not mkstemp's 0600).
- A failed write names its destination (`models/m.golf: No space left on device`).
- `check_outputs` refuses to write where a command reads: an output that is an input, lies inside an
  input folder or holds an input, paths resolved (symlinks followed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stages.errors import GolfError

PathLike = str | os.PathLike


class OutputError(GolfError):
    """An output that would overwrite an input, or replace what golf did not write."""


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Outputs never overwrite inputs
# ---------------------------------------------------------------------------------------------------

def check_outputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None]) -> None:
    """Refuse outputs that are inputs, lie inside an input folder or hold an input, and two outputs
    that are the same file (None entries are skipped)."""
    outs = [(o, Path(o).resolve()) for o in outputs if o is not None]
    ins = [(i, Path(i).resolve()) for i in inputs if i is not None]
    for k, (o, out) in enumerate(outs):
        for other, resolved in outs[:k]:
            if resolved == out:
                raise OutputError(f"{o}: given twice as an output (also as {other})")
        for i, src in ins:
            if out == src:
                raise OutputError(f"{o} is also an input of this command ({i}); refusing to "
                                  f"overwrite it")
            if src in out.parents and src.is_dir():
                raise OutputError(f"{o} lies inside the input folder {i}; refusing to write there")
            if out in src.parents:
                raise OutputError(f"the input {i} lies inside the output {o}; refusing to "
                                  f"replace it")


def check_not_cwd(folder: Path, shown: PathLike) -> None:
    """A folder output may not be the current folder or one of its parents."""
    cwd = Path.cwd().resolve()
    if folder.resolve() == cwd or folder.resolve() in cwd.parents:
        raise OutputError(f"--out {shown} is the current folder or holds it; give a folder of its "
                          f"own")


# ---------------------------------------------------------------------------------------------------
# The primitive writes (tests inject faults here)
# ---------------------------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    """Every byte golf writes itself goes through here."""
    with open(path, "wb") as f:
        f.write(data)


def rename(src: Path, dst: Path) -> None:
    """Every rename golf makes goes through here (or through `exchange`)."""
    os.replace(src, dst)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False where the system or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def naming(path: PathLike) -> Iterator[None]:
    """Give an OSError that names no file (a full disk, say) the name of `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None or str(e.filename).endswith(".tmp"):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------------
# Temporaries: locked by their writer, removed once it is gone
# ---------------------------------------------------------------------------------------------------

def is_held(path: PathLike) -> bool:
    """Whether a live process holds the lock of a temporary file or folder (is still writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def lock(path: PathLike) -> int:
    """Lock a file or folder for this process; the lock goes with the returned fd (close it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutputError(f"{path} is being written by another golf process") from None
    return fd


def remove(path: Path) -> None:
    """Delete a file or a folder (nothing when absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(dest: PathLike) -> None:
    """Clear what killed writers of `dest` left beside it: a `.NAME.old` whose swap was cut short
    goes back to `dest` (or away, when `dest` is there), and unlocked temporaries are deleted."""
    dest = Path(dest)
    old = dest.with_name(f".{dest.name}.old")
    if old.exists() and not is_held(old):
        if dest.exists() or dest.is_symlink():
            remove(old)
        else:
            rename(old, dest)
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        if not is_held(tmp):
            remove(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, 0o666 & ~_umask())
        with naming(path):
            yield tmp_path
            rename(tmp_path, path)
    finally:
        os.close(fd)
        tmp_path.unlink(missing_ok=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Put the finished folder `src` at `dst`; an older `dst` is deleted once `src` is in place."""
    if not dst.exists():
        rename(src, dst)
        return
    if exchange(src, dst):
        remove(src)  # now the older folder
        return
    old = dst.with_name(f".{dst.name}.old")
    rename(dst, old)
    rename(src, dst)
    remove(old)


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a new empty folder next to `path` (a symlink's target); it replaces `path` whole if
    the block succeeds, and is deleted otherwise."""
    path = Path(path)
    path = path.resolve() if path.is_symlink() else path
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd = lock(tmp)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        with naming(path):
            yield tmp
            replace_dir(tmp, path)
    finally:
        os.close(fd)
        if tmp.exists():
            remove(tmp)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write a file inside a folder that is itself temporary (see `atomic_dir`)."""
    with naming(path):
        _write(Path(path), data)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        _write(tmp, data)


def write_all_atomic(outputs: dict[PathLike, bytes]) -> None:
    """Write several files, every one to its temporary before any is renamed into place: a write
    that fails replaces none of them."""
    with contextlib.ExitStack() as stack:
        temps = [(path, stack.enter_context(atomic_path(path)), data)
                 for path, data in outputs.items()]
        for path, tmp, data in temps:
            with naming(path):
                _write(tmp, data)


def json_bytes(obj: Any, source: PathLike) -> bytes:
    """Sorted, indented JSON; NaN and infinity are refused (they are not JSON)."""
    try:
        return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    except ValueError:
        raise GolfError(f"{source}: refusing to write NaN or infinity as JSON") from None


def write_json_atomic(path: PathLike, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj, path))
