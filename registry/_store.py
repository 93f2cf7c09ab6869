"""Content-addressed model files: ``files/sha256/ab/<sha256>.onnx``.

A file is written with :class:`anomtune.files.AtomicFile`: under a
temporary name in its final folder (so on the same filesystem), flushed and
fsynced, then moved into place with ``os.replace``, which readers see as all
or nothing. Published files are read-only, 0444 less the umask, and their
folders 0755 less the umask, so every user who can reach the registry can
read its models. Identical bytes share one file. Reading checks the bytes
against the recorded hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from anomtune.files import AtomicFile, fsync_dir, make_dirs
from anomtune.registry._errors import IntegrityError, ModelNotFoundError, RegistryError

__all__ = [
    "TEMP_PREFIX",
    "blob_relpath",
    "file_sha256",
    "fsync_dir",
    "place",
    "read_model_file",
    "read_verified",
    "scan",
    "sha256_hex",
    "stage",
]

TEMP_PREFIX = ".tmp-"
SUFFIX = ".onnx"
# Published files are read-only: a reminder that they never change.
BLOB_MODE = 0o444


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def blob_relpath(digest: str) -> str:
    """The file's place under the files folder, always with ``/`` separators."""
    return f"sha256/{digest[:2]}/{digest}{SUFFIX}"


def stage(final: Path, data: bytes) -> Path:
    """Write ``data`` to a fsynced, read-only temporary file beside ``final``; return its path."""
    make_dirs(final.parent)
    out = AtomicFile(final, mode=BLOB_MODE, prefix=f"{TEMP_PREFIX}{final.stem[:16]}-{os.getpid()}-")
    try:
        out.write(data)
        return out.sync()
    except BaseException:
        out.discard()
        raise


def place(tmp: Path, final: Path, digest: str) -> bool:
    """Move a staged file into its content-addressed place.

    Returns False, leaving ``tmp`` for the caller to remove, when the place
    already holds exactly these bytes; a damaged file there is replaced.
    """
    if final.is_file():
        try:
            if file_sha256(final) == digest:
                return False
        except OSError:
            pass
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return True


def read_model_file(path: Path, what: str | None = None) -> bytes:
    """The bytes of a model file, or one error that says why they cannot be read.

    ``what`` names the registered version the file belongs to: losing a
    registry's own file is damage (:class:`IntegrityError`), while a file
    named by path is just not there (:class:`ModelNotFoundError`).
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, what, exc) from exc


def _unreadable(path: Path, what: str | None, exc: OSError) -> RegistryError:
    missing = isinstance(exc, FileNotFoundError)
    if what is not None:
        if missing:
            return IntegrityError(f"{what}: the model file {path} is missing")
        return IntegrityError(f"{what}: cannot read the model file {path}: {exc.strerror}")
    if missing:
        return ModelNotFoundError(f"{path}: no such model file")
    if isinstance(exc, IsADirectoryError):
        return ModelNotFoundError(f"{path}: is a folder, not a model file")
    return RegistryError(f"{path}: cannot read: {exc.strerror}")


def read_verified(path: Path, digest: str, what: str) -> bytes:
    """The bytes of ``path``, refused unless their sha256 is ``digest``."""
    data = read_model_file(path, what)
    found = sha256_hex(data)
    if found != digest:
        raise IntegrityError(
            f"{what}: the model file {path} does not match its recorded sha256 "
            f"(expected {digest[:12]}…, found {found[:12]}…); it was modified or corrupted, "
            "so it is refused"
        )
    return data


def scan(root: Path) -> Iterator[tuple[str, Path]]:
    """Every ``("blob", path)`` and ``("temp", path)`` under the files folder."""
    base = root / "sha256"
    if not base.is_dir():
        return
    for sub in sorted(base.iterdir()):
        if not sub.is_dir():
            continue
        for path in sorted(sub.iterdir()):
            if path.name.startswith(TEMP_PREFIX):
                yield "temp", path
            elif path.suffix == SUFFIX:
                yield "blob", path
