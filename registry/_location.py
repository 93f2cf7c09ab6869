"""Where a registry lives: its database and its folder of model files.

The rule, in order:

1. ``registry`` (the ``--registry`` option), else the ``ANOMTUNE_REGISTRY``
   environment variable, else ``.anomtune/registry`` in the current folder.
2. A value containing ``://`` is a database URL (``sqlite:////abs/registry.db``,
   ``postgresql+psycopg://user@host/db``); anything else is a path. A path
   ending in ``.db``, ``.sqlite`` or ``.sqlite3`` (or naming an existing file)
   is the SQLite database itself; any other path is a registry folder that
   holds ``registry.db``.
3. Model files live in ``files`` (the ``--registry-files`` option), else the
   ``ANOMTUNE_REGISTRY_FILES`` environment variable, else the ``files``
   folder beside the SQLite database. A server database has no "beside", so
   a URL other than ``sqlite:`` needs the files folder given explicitly: a
   shared folder every machine of the team mounts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anomtune.registry._errors import RegistryError

__all__ = [
    "DB_NAME",
    "DEFAULT_REGISTRY",
    "ENV_FILES",
    "ENV_REGISTRY",
    "RegistryLocation",
    "locate_registry",
]

DEFAULT_REGISTRY = ".anomtune/registry"
ENV_REGISTRY = "ANOMTUNE_REGISTRY"
ENV_FILES = "ANOMTUNE_REGISTRY_FILES"
DB_NAME = "registry.db"
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class RegistryLocation:
    """The database URL, the local SQLite file (if any) and the model-file folder."""

    url: str
    files: Path
    display: str
    sqlite_path: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


def locate_registry(
    registry: str | os.PathLike | None = None, files: str | os.PathLike | None = None
) -> RegistryLocation:
    """Apply the rule of this module to an option value (or the environment)."""
    spec = registry if registry not in (None, "") else os.environ.get(ENV_REGISTRY) or None
    spec = str(spec) if spec is not None else DEFAULT_REGISTRY
    files = files if files not in (None, "") else os.environ.get(ENV_FILES) or None
    files_dir = Path(files).expanduser().absolute() if files is not None else None
    if "://" in spec:
        return _from_url(spec, files_dir)
    path = Path(spec).expanduser().absolute()
    is_db_file = path.suffix.lower() in _DB_SUFFIXES or path.is_file()
    db = path if is_db_file else path / DB_NAME
    return RegistryLocation(
        url=f"sqlite:///{db}",
        files=files_dir or db.parent / "files",
        display=spec,
        sqlite_path=db,
    )


def _from_url(spec: str, files_dir: Path | None) -> RegistryLocation:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(spec)
    except ArgumentError as exc:
        raise RegistryError(f"not a database URL: {_hide_password(spec)} ({exc})") from exc
    display = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise RegistryError(f"{display}: a registry needs a database file, not memory")
        db = Path(url.database).expanduser().absolute()
        return RegistryLocation(
            url=spec,
            files=files_dir or db.parent / "files",
            display=display,
            sqlite_path=db,
        )
    if files_dir is None:
        raise RegistryError(
            f"{display}: a database URL registry keeps model files in a shared folder; "
            f"give it with --registry-files DIR or {ENV_FILES}"
        )
    return RegistryLocation(url=spec, files=files_dir, display=display)


def _hide_password(spec: str) -> str:
    scheme, sep, rest = spec.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return scheme + sep + creds + at + host
