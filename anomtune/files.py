"""Atomic writes: the one way anomtune puts a file or a folder in place.

A file is written under a temporary name in its final folder (so on the same
filesystem), flushed and fsynced, then moved into place with ``os.replace``:
readers see the old file or the new one, never half of one. A folder is
staged the same way and moved in whole. The temporary file or folder is
removed again if writing fails, Ctrl-C included.

Files get :data:`FILE_MODE` (0644) and folders :data:`FOLDER_MODE` (0755),
less the process umask, like files made with ``open``. The standard
library's ``tempfile.mkstemp`` and ``mkdtemp`` make private 0600 / 0700
entries whatever the umask, which left exported models, scores and run
folders unreadable to anyone else; the temporary names are made here
instead, with the mode passed to ``os.open`` / ``os.mkdir`` so that the
kernel applies the umask (reading the umask would briefly change it for
every thread).

Standard library only: the serving path writes through this module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from pathlib import Path

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "AtomicFile",
    "fsync_dir",
    "make_dirs",
    "replace_dir",
    "staging_folder",
    "write_bytes",
]

FILE_MODE = 0o644
FOLDER_MODE = 0o755
_ATTEMPTS = 100
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _temp_name(folder: Path, prefix: str) -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}.tmp"


class AtomicFile:
    """A binary file that appears at ``path`` only once it is complete.

    Write through :attr:`file` (or :meth:`write`), then :meth:`commit`; or use
    it as a context manager, which commits on success and discards on any
    exception, ``KeyboardInterrupt`` included. ``mode`` is the new file's
    permission bits before the umask; ``prefix`` starts the temporary name
    (default ``.NAME.``, a hidden file beside the target).
    """

    def __init__(self, path: str | Path, *, mode: int = FILE_MODE, prefix: str | None = None):
        self.path = Path(path)
        prefix = f".{self.path.name}." if prefix is None else prefix
        for _ in range(_ATTEMPTS):
            temp = _temp_name(self.path.parent, prefix)
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, mode)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - 100 collisions of 48 random bits
            raise FileExistsError(f"no free temporary name beside {self.path}")
        self.temp: Path | None = temp
        try:
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        self._synced = False

    def write(self, data) -> int:
        return self.file.write(data)

    def sync(self) -> Path:
        """Flush, fsync and close the temporary file; its path, complete on disk."""
        if not self._synced:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self._synced = True
        return self.temp

    def commit(self) -> Path:
        """Sync the file and move it into place; the target path."""
        try:
            self.sync()
            os.replace(self.temp, self.path)
        except BaseException:
            self.discard()
            raise
        self.temp = None
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file (nothing is left behind)."""
        with contextlib.suppress(OSError):
            self.file.close()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_bytes(path: str | Path, data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Put ``data`` at ``path`` atomically (temporary file, fsync, rename)."""
    with AtomicFile(path, mode=mode) as out:
        out.write(data)
    return Path(path)


def make_dirs(folder: str | Path) -> list[Path]:
    """Create ``folder`` and its missing parents with :data:`FOLDER_MODE`; those created.

    ``Path.mkdir(parents=True)`` gives the parents 0777 less the umask; here
    every level gets the same mode. The list (outermost first) lets a caller
    remove them again when the write they were made for fails.
    """
    folder = Path(folder)
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    created = []
    for level in reversed(missing):
        try:
            os.mkdir(level, FOLDER_MODE)
        except FileExistsError:
            if not level.is_dir():
                raise
            continue
        created.append(level)
    return created


def staging_folder(target: str | Path) -> Path:
    """An empty folder beside ``target`` to fill and then :func:`replace_dir` into place.

    Named ``.NAME.<random>.tmp`` in ``target``'s parent (created if missing),
    so the final rename stays on one filesystem.
    """
    target = Path(target)
    make_dirs(target.parent)
    for _ in range(_ATTEMPTS):
        staged = _temp_name(target.parent, f".{target.name}.")
        try:
            os.mkdir(staged, FOLDER_MODE)
        except FileExistsError:
            continue
        return staged
    raise FileExistsError(f"no free temporary name beside {target}")  # pragma: no cover


def replace_dir(staged: str | Path, target: str | Path) -> None:
    """Move a fully written folder into place, replacing an older one.

    Every file under ``staged`` is fsynced first. On Linux the two folders
    swap places in one atomic rename (``renameat2`` with
    ``RENAME_EXCHANGE``), so ``target`` always names a complete folder, the
    old one or the new one, even if the process dies in between. Elsewhere,
    or on a file system without the exchange, the old folder is first renamed
    aside (``.NAME.old-PID``) and removed afterwards.
    """
    staged, target = Path(staged), Path(target)
    _fsync_tree(staged)
    if target.exists() and _exchange(staged, target):
        fsync_dir(target.parent)
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    _fsync(folder)


def _fsync(path: str | Path) -> None:
    """fsync one file or folder; one that cannot be opened or synced is passed over."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``, deepest first."""
    for root, _dirs, names in os.walk(folder, topdown=False):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _fsync(path)
        fsync_dir(root)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2``; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
