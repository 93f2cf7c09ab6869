"""The registry: model versions in a database, their files in a content-addressed folder.

Reading (:meth:`Registry.get`, :meth:`Registry.load`, :func:`resolve`) needs
only the standard library, SQLAlchemy and onnxruntime. Writing keeps three
promises:

* A version is visible only once complete. Its file is staged under a
  temporary name beside its final place and fsynced; then one transaction
  increments the model's version counter, moves the file into place with
  ``os.replace`` and inserts the version's rows. A crash at any point leaves
  either no version (perhaps an unreferenced file, which ``verify`` notes)
  or a whole one.
* Version numbers come from a per-model counter row updated in the
  transaction that inserts the version, so the database serialises
  concurrent registrations: no "highest + 1" guess and no retry loop.
* Published versions never change: their file, hash, metadata and lineage
  are written once. Tags, description, status and aliases are annotations
  that may change; every alias move is appended to the alias history.

Test seam: when the environment variable ``ANOMTUNE_REGISTRY_TEST_PAUSE``
names one of :data:`PAUSE_POINTS`, a registration stops there (printing
``anomtune-registry: paused at POINT`` on stderr) and sleeps until it is
killed. The crash tests use it to kill a registration at a known point:
``staged`` (temporary file written), ``placed`` (file in place, inside the
transaction) and ``inserted`` (rows inserted, not yet committed). An alias
move (``promote``, ``rollback``) stops at one of :data:`ALIAS_PAUSE_POINTS`:
``alias-moved`` (the alias row changed, no history row yet) and
``alias-recorded`` (history row written, not yet committed).
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from anomtune.errors import first_line as _first_line
from anomtune.registry import _schema as S
from anomtune.registry import _store
from anomtune.registry._errors import (
    InvalidNameError,
    ModelNotFoundError,
    RegistryError,
    RegistryNotFoundError,
)
from anomtune.registry._location import RegistryLocation, locate_registry
from anomtune.registry._names import (
    ModelRef,
    parse_ref,
    validate_alias,
    validate_name,
    validate_tag,
)
from anomtune.registry._record import Record

__all__ = [
    "ACTIVE",
    "ALIAS_PAUSE_POINTS",
    "ARCHIVED",
    "PAUSE_POINTS",
    "TEST_PAUSE_ENV",
    "AliasMove",
    "ModelSummary",
    "ModelVersion",
    "Problem",
    "Registry",
    "VerifyReport",
    "graph_metadata",
    "resolve",
]

logger = logging.getLogger(__name__)

ACTIVE = "active"
ARCHIVED = "archived"
TEST_PAUSE_ENV = "ANOMTUNE_REGISTRY_TEST_PAUSE"
PAUSE_POINTS = ("staged", "placed", "inserted")
ALIAS_PAUSE_POINTS = ("alias-moved", "alias-recorded")
SQLITE_TIMEOUT = 60.0
_ATTEMPTS = 5


# ---------------------------------------------------------------- records


@dataclass
class ModelVersion:
    """One model version (or, with ``name`` None, a model file outside the registry)."""

    name: str | None
    version: int | None
    sha256: str
    size: int
    file: Path
    metadata: dict
    lineage: dict
    description: str = ""
    status: str = ACTIVE
    created_at: str | None = None
    created_by: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """``name/version``, or the file path for a model outside the registry."""
        return f"{self.name}/{self.version}" if self.name is not None else str(self.file)

    def to_dict(self) -> dict:
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "file": str(self.file),
            "status": self.status,
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "tags": dict(self.tags),
            "aliases": list(self.aliases),
            "lineage": self.lineage,
            "metadata": self.metadata,
        }


@dataclass
class ModelSummary(Record):
    """A model name with its version counts, newest active version and aliases."""

    name: str
    versions: int
    active: int
    latest: int | None
    aliases: dict[str, int]
    created_at: str
    updated_at: str


@dataclass
class AliasMove(Record):
    """One row of the alias history."""

    name: str
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    at: str
    who: str
    reason: str


@dataclass
class Problem(Record):
    """What ``verify`` found wrong (or worth noting) about one version or file."""

    ref: str | None
    file: str
    problem: str


@dataclass
class VerifyReport(Record):
    """Versions and files checked; problems fail the check, notes do not."""

    versions: int
    files: int
    problems: list[Problem]
    notes: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, **super().to_dict()}


# ---------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _pause(point: str) -> None:
    """The documented crash-test seam (see the module documentation)."""
    if os.environ.get(TEST_PAUSE_ENV) == point:
        sys.stderr.write(f"anomtune-registry: paused at {point}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)


def graph_metadata(data: bytes, source: str = "<bytes>") -> dict:
    """The anomtune JSON stored in an ONNX graph, read with onnxruntime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RegistryError(f"{source}: not a loadable ONNX model: {_first_line(exc)}") from exc
    raw = session.get_modelmeta().custom_metadata_map.get("anomtune")
    if raw is None:
        raise RegistryError(f"{source}: not an anomtune model (no 'anomtune' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{source}: the 'anomtune' metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise RegistryError(f"{source}: the 'anomtune' metadata is not a JSON object")
    return meta


class _Conflict(RegistryError):
    """A concurrent change won a race (a unique key was taken first)."""


class _Retry(Exception):
    """A lock row vanished under a concurrent deletion; start the transaction again."""


def _sqlite_connect(dbapi_connection, _record) -> None:
    # The driver's own transaction handling is switched off so that the
    # "begin" hook below decides how each transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn) -> None:
    # A writing transaction takes SQLite's write lock at once (waiting up to
    # the busy timeout), so two writers never deadlock on a lock upgrade.
    write = conn.get_execution_options().get("anomtune_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _lock_row(conn: sa.Connection, table: sa.Table, key: str, value: object, **stamp) -> bool:
    """Lock the row of ``table`` whose ``key`` is ``value`` by writing ``stamp`` into it.

    False when there is no such row (a concurrent deletion removed it). Lock
    order everywhere: blob row, then model row.
    """
    update = sa.update(table).where(table.c[key] == value).values(**stamp)
    return conn.execute(update).rowcount == 1


def _make_engine(location: RegistryLocation) -> sa.Engine:
    try:
        if location.is_sqlite:
            engine = sa.create_engine(location.url, connect_args={"timeout": SQLITE_TIMEOUT})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = sa.create_engine(location.url, pool_pre_ping=True)
    except (ImportError, sa_exc.SQLAlchemyError) as exc:
        raise RegistryError(
            f"cannot open registry database {location.display}: {_first_line(exc)} "
            "(is its database driver installed, e.g. 'pip install psycopg'?)"
        ) from exc
    return engine


# ---------------------------------------------------------------- the registry


class Registry:
    """A model registry: open it with :meth:`open`, close it (or use ``with``).

    Examples
    --------
    >>> with Registry.open(".anomtune/registry") as reg:  # doctest: +SKIP
    ...     data, info = reg.load("cardio@champion")
    """

    def __init__(self, location: RegistryLocation, engine: sa.Engine):
        self.location = location
        self.engine = engine

    # -- opening

    @classmethod
    def open(
        cls,
        registry: str | os.PathLike | RegistryLocation | None = None,
        *,
        files: str | os.PathLike | None = None,
        create: bool = False,
    ) -> Registry:
        """Open the registry at ``registry`` (see :func:`locate_registry`).

        With ``create`` a missing registry is created; without it, a missing
        registry is an error that says how to make one.
        """
        location = (
            registry if isinstance(registry, RegistryLocation) else locate_registry(registry, files)
        )
        db = location.sqlite_path
        if db is not None and not db.exists() and not create:
            raise RegistryNotFoundError(
                f"there is no model registry at {location.display} (register a model first: "
                "anomtune registry register RUN_DIR --name NAME)"
            )
        if create:
            try:
                if db is not None:
                    db.parent.mkdir(parents=True, exist_ok=True)
                location.files.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"cannot create the registry at {location.display}: {exc.strerror or exc}"
                ) from exc
        engine = _make_engine(location)
        reg = cls(location, engine)
        try:
            reg._prepare_schema(create)
        except BaseException:
            engine.dispose()
            raise
        return reg

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prepare_schema(self, create: bool) -> None:
        display = self.location.display
        for attempt in range(_ATTEMPTS):
            try:
                with self._tx(write=create) as conn:
                    if sa.inspect(conn).has_table(S.info.name):
                        found = conn.execute(
                            sa.select(S.info.c.value).where(S.info.c.key == "schema_version")
                        ).scalar()
                        if found != S.SCHEMA_VERSION:
                            raise RegistryError(
                                f"{display}: registry schema version {found!r}, this anomtune "
                                f"reads version {S.SCHEMA_VERSION!r}"
                            )
                        return
                    if not create:
                        raise RegistryNotFoundError(
                            f"there is no model registry in {display} (no registry tables; "
                            "register a model first: anomtune registry register RUN_DIR "
                            "--name NAME)"
                        )
                    S.metadata.create_all(conn)
                    conn.execute(
                        sa.insert(S.info).values(key="schema_version", value=S.SCHEMA_VERSION)
                    )
                    conn.execute(sa.insert(S.info).values(key="created_at", value=_now()))
                return
            except RegistryError:
                # Another process may have created the tables at the same
                # moment (a server database does not serialise DDL for us).
                if attempt == _ATTEMPTS - 1 or not create:
                    raise
                time.sleep(0.05 * (attempt + 1))

    @contextlib.contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; database errors become :class:`RegistryError`."""
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(anomtune_write=True)
                with conn.begin():
                    yield conn
        except sa_exc.IntegrityError as exc:
            raise _Conflict(
                f"{self.location.display}: a concurrent change conflicted: "
                f"{_first_line(exc.orig or exc)}"
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise RegistryError(
                f"{self.location.display}: database error: {_first_line(cause)}"
            ) from exc

    # -- reading

    def _path(self, relpath: str) -> Path:
        return self.location.files / relpath

    def _model_row(self, conn, name: str):
        # A counter still at 0 belongs to a first registration that never
        # committed: that model does not exist yet.
        M = S.models
        return conn.execute(sa.select(M).where(M.c.name == name, M.c.last_version > 0)).first()

    def _not_found(self, conn, name: str, what: str) -> ModelNotFoundError:
        if self._model_row(conn, name) is None:
            known = conn.execute(
                sa.select(S.models.c.name)
                .where(S.models.c.last_version > 0)
                .order_by(S.models.c.name)
            ).scalars()
            names = list(known)
            hint = f" (models: {', '.join(names[:10])})" if names else " (the registry is empty)"
            return ModelNotFoundError(f"no model named {name!r}{hint}")
        return ModelNotFoundError(what)

    def _find_row(self, conn, ref: ModelRef):
        V = S.versions
        name = ref.name
        if ref.version is not None:
            row = conn.execute(
                sa.select(V).where(V.c.name == name, V.c.version == ref.version)
            ).first()
            if row is None:
                numbers = conn.execute(
                    sa.select(V.c.version).where(V.c.name == name).order_by(V.c.version)
                ).scalars()
                have = ", ".join(map(str, numbers)) or "none"
                raise self._not_found(
                    conn, name, f"model {name!r} has no version {ref.version} (versions: {have})"
                )
            return row
        if ref.alias is not None:
            A = S.aliases
            version = conn.execute(
                sa.select(A.c.version).where(A.c.name == name, A.c.alias == ref.alias)
            ).scalar()
            if version is None:
                held = conn.execute(
                    sa.select(A.c.alias).where(A.c.name == name).order_by(A.c.alias)
                ).scalars()
                have = ", ".join(held) or "none"
                raise self._not_found(
                    conn, name, f"model {name!r} has no alias {ref.alias!r} (aliases: {have})"
                )
            return conn.execute(
                sa.select(V).where(V.c.name == name, V.c.version == version)
            ).first()
        row = conn.execute(
            sa.select(V)
            .where(V.c.name == name, V.c.status == ACTIVE)
            .order_by(V.c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(V).where(V.c.name == name)
            ).scalar()
            raise self._not_found(
                conn,
                name,
                f"model {name!r} has no active version ({total} archived; "
                f"name one as {name}/VERSION)",
            )
        return row

    def _records(self, conn, rows) -> list[ModelVersion]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        tag_rows = conn.execute(
            sa.select(S.tags).where(S.tags.c.version_id.in_(ids)).order_by(S.tags.c.key)
        ).all()
        tags: dict[int, dict[str, str]] = {}
        for t in tag_rows:
            tags.setdefault(t.version_id, {})[t.key] = t.value
        names = {r.name for r in rows}
        alias_rows = conn.execute(
            sa.select(S.aliases).where(S.aliases.c.name.in_(names)).order_by(S.aliases.c.alias)
        ).all()
        held: dict[tuple[str, int], list[str]] = {}
        for a in alias_rows:
            held.setdefault((a.name, a.version), []).append(a.alias)
        return [
            ModelVersion(
                name=r.name,
                version=r.version,
                sha256=r.sha256,
                size=r.size,
                file=self._path(r.file),
                metadata=json.loads(r.model_metadata),
                lineage=json.loads(r.lineage),
                description=r.description,
                status=r.status,
                created_at=r.created_at,
                created_by=r.created_by,
                tags=tags.get(r.id, {}),
                aliases=held.get((r.name, r.version), []),
            )
            for r in rows
        ]

    def _registry_ref(self, ref: str | ModelRef) -> ModelRef:
        parsed = parse_ref(ref)
        if parsed.is_file:
            raise InvalidNameError(
                f"{parsed}: a model file, not a registry reference (use NAME, NAME/VERSION "
                "or NAME@ALIAS)"
            )
        return parsed

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """The version a registry reference names (metadata only, no file read)."""
        parsed = self._registry_ref(ref)
        with self._tx() as conn:
            return self._records(conn, [self._find_row(conn, parsed)])[0]

    def load(self, ref: str | ModelRef) -> tuple[bytes, ModelVersion]:
        """The model's bytes, checked against the recorded sha256, and its record."""
        info = self.get(ref)
        data = _store.read_verified(info.file, info.sha256, info.ref)
        return data, info

    def models(self) -> list[ModelSummary]:
        """Every model name with counts, newest active version and aliases."""
        V, A = S.versions, S.aliases
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(S.models).where(S.models.c.last_version > 0).order_by(S.models.c.name)
            ).all()
            counts = {
                r.name: (r.total, r.active or 0, r.latest)
                for r in conn.execute(
                    sa.select(
                        V.c.name,
                        sa.func.count().label("total"),
                        sa.func.sum(sa.case((V.c.status == ACTIVE, 1), else_=0)).label("active"),
                        sa.func.max(sa.case((V.c.status == ACTIVE, V.c.version))).label("latest"),
                    ).group_by(V.c.name)
                )
            }
            held: dict[str, dict[str, int]] = {}
            for a in conn.execute(sa.select(A).order_by(A.c.alias)):
                held.setdefault(a.name, {})[a.alias] = a.version
        out = []
        for r in rows:
            total, active, latest = counts.get(r.name, (0, 0, None))
            out.append(
                ModelSummary(
                    name=r.name,
                    versions=int(total),
                    active=int(active),
                    latest=latest,
                    aliases=held.get(r.name, {}),
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                )
            )
        return out

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first."""
        validate_name(name)
        V = S.versions
        with self._tx() as conn:
            if self._model_row(conn, name) is None:
                raise self._not_found(conn, name, "")
            rows = conn.execute(sa.select(V).where(V.c.name == name).order_by(V.c.version)).all()
            return self._records(conn, rows)

    def aliases(self, name: str) -> dict[str, int]:
        """Each alias of a model and the version it points to."""
        validate_name(name)
        A = S.aliases
        with self._tx() as conn:
            if self._model_row(conn, name) is None:
                raise self._not_found(conn, name, "")
            rows = conn.execute(sa.select(A).where(A.c.name == name).order_by(A.c.alias))
            return {r.alias: r.version for r in rows}

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """The alias moves of a model (or of one alias), oldest first."""
        validate_name(name)
        H = S.alias_history
        with self._tx() as conn:
            if self._model_row(conn, name) is None:
                raise self._not_found(conn, name, "")
            query = sa.select(H).where(H.c.name == name)
            if alias is not None:
                query = query.where(H.c.alias == validate_alias(alias))
            rows = conn.execute(query.order_by(H.c.id)).all()
        return [AliasMove.from_row(r) for r in rows]

    # -- registering

    def _ensure(self, table: sa.Table, key: str, value: str, **fields) -> None:
        """Insert a row keyed by ``key`` unless it exists (a racing insert is fine)."""
        with contextlib.suppress(_Conflict), self._tx(write=True) as conn:
            exists = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c[key] == value)
            ).scalar()
            if not exists:
                conn.execute(sa.insert(table).values({key: value, **fields}))

    def register(
        self,
        data: bytes,
        *,
        name: str,
        metadata: dict | None = None,
        lineage: dict | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Publish ``data`` (an anomtune ONNX graph) as the next version of ``name``."""
        validate_name(name)
        checked_tags = dict(validate_tag(k, v) for k, v in (tags or {}).items())
        if metadata is None:
            metadata = graph_metadata(data)
        if lineage is None:
            lineage = dict(metadata.get("lineage") or {})
            if "data_fingerprint" in metadata:
                lineage.setdefault("data_fingerprint", metadata["data_fingerprint"])
        digest = _store.sha256_hex(data)
        relpath = _store.blob_relpath(digest)
        final = self._path(relpath)
        now = _now()
        who = _who()
        try:
            tmp = _store.stage(final, data)
        except OSError as exc:
            raise RegistryError(
                f"cannot write the model file into {self.location.files}: {exc.strerror or exc}; "
                "nothing was registered"
            ) from exc
        try:
            _pause("staged")
            self._ensure(S.models, "name", name, last_version=0, created_at=now, updated_at=now)
            for _ in range(_ATTEMPTS):
                self._ensure(S.blobs, "sha256", digest, size=len(data), touched_at=now)
                try:
                    version = self._publish(
                        tmp, final, digest, relpath, name, data, metadata, lineage,
                        description, checked_tags, who,
                    )  # fmt: skip
                    break
                except _Retry:
                    continue
                except OSError as exc:
                    raise RegistryError(
                        f"cannot place the model file in {self.location.files}: "
                        f"{exc.strerror or exc}; nothing was registered"
                    ) from exc
            else:
                raise RegistryError(f"could not register {name}: its file kept being deleted")
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("registered %s/%d (%s)", name, version, digest[:12])
        return self.get(ModelRef(name=name, version=version))

    def _publish(
        self, tmp, final, digest, relpath, name, data, metadata, lineage, description, tags, who
    ) -> int:
        V = S.versions
        now = _now()
        with self._tx(write=True) as conn:
            if not _lock_row(conn, S.blobs, "sha256", digest, touched_at=now):
                raise _Retry
            bump = S.models.c.last_version + 1
            if not _lock_row(conn, S.models, "name", name, last_version=bump, updated_at=now):
                raise RegistryError(f"model {name!r} disappeared during registration")
            version = conn.execute(
                sa.select(S.models.c.last_version).where(S.models.c.name == name)
            ).scalar_one()
            _store.place(tmp, final, digest)
            _pause("placed")
            version_id = conn.execute(
                sa.insert(V).values(
                    name=name,
                    version=version,
                    sha256=digest,
                    size=len(data),
                    file=relpath,
                    model_metadata=_dumps(metadata),
                    lineage=_dumps(lineage),
                    description=description or "",
                    status=ACTIVE,
                    created_at=now,
                    created_by=who,
                )
            ).inserted_primary_key[0]
            for key, value in tags.items():
                conn.execute(sa.insert(S.tags).values(version_id=version_id, key=key, value=value))
            _pause("inserted")
        return int(version)

    # -- annotations

    def set_tags(
        self, ref: str | ModelRef, tags: dict[str, str], remove: tuple[str, ...] = ()
    ) -> ModelVersion:
        """Set (or with ``remove``, delete) tags of a version."""
        parsed = self._registry_ref(ref)
        checked = dict(validate_tag(k, v) for k, v in tags.items())
        T = S.tags
        with self._tx(write=True) as conn:
            row = self._find_row(conn, parsed)
            for key in remove:
                if key not in checked:
                    conn.execute(sa.delete(T).where(T.c.version_id == row.id, T.c.key == key))
            for key, value in checked.items():
                conn.execute(sa.delete(T).where(T.c.version_id == row.id, T.c.key == key))
                conn.execute(sa.insert(T).values(version_id=row.id, key=key, value=value))
        return self.get(ModelRef(name=row.name, version=row.version))

    def set_status(self, ref: str | ModelRef, status: str) -> ModelVersion:
        """Archive a version (``archived``) or bring it back (``active``)."""
        if status not in (ACTIVE, ARCHIVED):
            raise InvalidNameError(f"status must be {ACTIVE!r} or {ARCHIVED!r}, not {status!r}")
        parsed = self._registry_ref(ref)
        with self._tx(write=True) as conn:
            row = self._find_row(conn, parsed)
            conn.execute(
                sa.update(S.versions).where(S.versions.c.id == row.id).values(status=status)
            )
        return self.get(ModelRef(name=row.name, version=row.version))

    # -- aliases

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        reason: str = "",
        action: str = "promote",
        expect: object = ...,
    ) -> AliasMove | None:
        """Point ``name@alias`` at ``version`` and append the move to the history.

        ``expect`` is the holder the caller decided on (e.g. the one a
        promotion gate compared against); if the alias moved meanwhile, the
        call refuses. Returns None when the version already holds the alias.
        """
        validate_name(name)
        validate_alias(alias)
        A, H = S.aliases, S.alias_history
        now = _now()
        with self._tx(write=True) as conn:
            if not _lock_row(conn, S.models, "name", name, updated_at=now):
                raise self._not_found(conn, name, "")
            row = self._find_row(conn, ModelRef(name=name, version=int(version)))
            if row.status != ACTIVE and action != "rollback":
                raise RegistryError(
                    f"{name}/{version} is archived; restore it first "
                    f"(anomtune registry archive {name}/{version} --restore)"
                )
            current = conn.execute(
                sa.select(A.c.version).where(A.c.name == name, A.c.alias == alias)
            ).scalar()
            if expect is not ... and current != expect:
                raise RegistryError(
                    f"{name}@{alias} moved to version {current} while this change was being "
                    "decided; nothing changed, run the command again"
                )
            if current == version:
                return None
            if current is None:
                conn.execute(
                    sa.insert(A).values(name=name, alias=alias, version=version, updated_at=now)
                )
            else:
                conn.execute(
                    sa.update(A)
                    .where(A.c.name == name, A.c.alias == alias)
                    .values(version=version, updated_at=now)
                )
            _pause("alias-moved")
            move = AliasMove(name, alias, action, current, int(version), now, _who(), reason)
            conn.execute(sa.insert(H).values(**move.to_dict()))
            _pause("alias-recorded")
        return move

    def rollback_target(self, name: str, alias: str) -> int | None:
        """The version that held ``alias`` before its current holder, skipping deleted ones.

        Each move pushes the version it replaced; each rollback pops back to
        the version it restored; so repeated rollbacks walk further back.
        """
        moves = self.history(name, alias)
        current = self.aliases(name).get(alias)
        existing = {v.version for v in self.versions(name)}
        stack: list[int] = []
        for move in moves:
            if move.action == "rollback":
                while stack and stack.pop() != move.to_version:
                    pass
            elif move.from_version is not None:
                stack.append(move.from_version)
        while stack:
            candidate = stack.pop()
            if candidate in existing and candidate != current:
                return candidate
        return None

    def rollback(self, name: str, alias: str, *, reason: str = "") -> AliasMove:
        """Move ``alias`` back to its previous holder (recorded as a new history row)."""
        validate_alias(alias)
        current = self.aliases(name).get(alias)
        target = self.rollback_target(name, alias)
        if target is None:
            raise RegistryError(f"{name}@{alias} has no earlier holder to roll back to")
        move = self.set_alias(
            name,
            alias,
            target,
            reason=reason or f"rollback from version {current}",
            action="rollback",
            expect=current,
        )
        assert move is not None
        return move

    # -- deleting

    def delete(self, ref: str | ModelRef, *, force: bool = False, reason: str = "") -> ModelVersion:
        """Delete one version (named by number or alias); its file goes when unreferenced.

        A version that holds an alias is kept unless ``force``, which also
        removes those aliases (recorded in the history).
        """
        parsed = self._registry_ref(ref)
        if parsed.version is None and parsed.alias is None:
            raise InvalidNameError(
                f"say which version of {parsed.name!r} to delete: {parsed.name}/VERSION"
            )
        info = self.get(parsed)
        A, V, T, H = S.aliases, S.versions, S.tags, S.alias_history
        now = _now()
        with self._tx(write=True) as conn:
            _lock_row(conn, S.models, "name", info.name, updated_at=now)
            row = self._find_row(conn, ModelRef(name=info.name, version=info.version))
            held = list(
                conn.execute(
                    sa.select(A.c.alias)
                    .where(A.c.name == row.name, A.c.version == row.version)
                    .order_by(A.c.alias)
                ).scalars()
            )
            if held and not force:
                raise RegistryError(
                    f"{info.ref} holds alias(es) {', '.join('@' + a for a in held)}; move them "
                    "first or delete with --force"
                )
            for alias in held:
                conn.execute(sa.delete(A).where(A.c.name == row.name, A.c.alias == alias))
                why = reason or f"version {row.version} deleted"
                move = AliasMove(row.name, alias, "remove", row.version, None, now, _who(), why)
                conn.execute(sa.insert(H).values(**move.to_dict()))
            conn.execute(sa.delete(T).where(T.c.version_id == row.id))
            conn.execute(sa.delete(V).where(V.c.id == row.id))
        self._collect(row.sha256, row.file)
        return info

    def _collect(self, digest: str, relpath: str) -> None:
        """Remove a file no version references, under its blob row's lock."""
        now = _now()
        with self._tx(write=True) as conn:
            if not _lock_row(conn, S.blobs, "sha256", digest, touched_at=now):
                return
            refs = conn.execute(
                sa.select(sa.func.count())
                .select_from(S.versions)
                .where(S.versions.c.sha256 == digest)
            ).scalar()
            if refs:
                return
            # Removed before the commit, while the lock keeps registrations of
            # the same bytes waiting; a crash here leaves only a lock row.
            self._path(relpath).unlink(missing_ok=True)
            conn.execute(sa.delete(S.blobs).where(S.blobs.c.sha256 == digest))

    # -- checking

    def verify(self, *, check_onnx: bool = True) -> VerifyReport:
        """Check every version's file (present, hash, ONNX checker, metadata) and alias.

        Every alias must point at an existing version, and the last history
        row of each alias must name its current holder. Files no version
        references (left by an interrupted registration or deletion) and
        staged temporary files are reported as notes.
        """
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(S.versions).order_by(S.versions.c.name, S.versions.c.version)
            ).all()
            alias_rows = conn.execute(
                sa.select(S.aliases).order_by(S.aliases.c.name, S.aliases.c.alias)
            ).all()
            moves = conn.execute(sa.select(S.alias_history).order_by(S.alias_history.c.id)).all()
        problems: list[Problem] = _check_aliases(rows, alias_rows, moves)
        seen: dict[str, str | None] = {}
        for row in rows:
            path = self._path(row.file)
            ref = f"{row.name}/{row.version}"
            if row.sha256 not in seen:
                seen[row.sha256] = _check_file(path, row.sha256, check_onnx)
            trouble = seen[row.sha256]
            if trouble is None and check_onnx:
                trouble = _check_metadata(path, row.model_metadata)
            if trouble is not None:
                problems.append(Problem(ref, str(path), trouble))
        notes: list[Problem] = []
        if check_onnx and importlib.util.find_spec("onnx") is None:
            notes.append(Problem(None, "-", "the onnx package is not installed: checker skipped"))
        referenced = {self._path(r.file).resolve() for r in rows}
        for kind, path in _store.scan(self.location.files):
            if kind == "temp":
                notes.append(Problem(None, str(path), "staged file of an unfinished registration"))
            elif path.resolve() not in referenced:
                notes.append(Problem(None, str(path), "no version references this file"))
        return VerifyReport(len(rows), len(seen), problems, notes)


def _check_aliases(rows, alias_rows, moves) -> list[Problem]:
    """Aliases that point at no version, or that disagree with their history."""
    existing = {(r.name, r.version) for r in rows}
    last = {(m.name, m.alias): m.to_version for m in moves}
    holders = {(a.name, a.alias): a.version for a in alias_rows}
    problems = []
    for (name, alias), version in holders.items():
        ref = f"{name}@{alias}"
        if (name, version) not in existing:
            problems.append(
                Problem(ref, "-", f"the alias points at version {version}, which is gone")
            )
        elif last.get((name, alias)) != version:
            problems.append(
                Problem(ref, "-", f"the alias history does not end at version {version}")
            )
    for (name, alias), version in last.items():
        if version is not None and (name, alias) not in holders:
            problems.append(
                Problem(
                    f"{name}@{alias}",
                    "-",
                    f"the history moved the alias to {version}, but the alias is missing",
                )
            )
    return problems


def _check_file(path: Path, digest: str, check_onnx: bool) -> str | None:
    if not path.is_file():
        return "the model file is missing"
    try:
        found = _store.file_sha256(path)
    except OSError as exc:
        return f"cannot read the model file: {exc.strerror}"
    if found != digest:
        return f"sha256 mismatch: recorded {digest[:12]}…, file has {found[:12]}…"
    if check_onnx:
        try:
            import onnx
        except ImportError:
            return None  # reported once by verify() as a note
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # the checker raises several types
            return f"onnx.checker: {_first_line(exc)}"
    return None


def _check_metadata(path: Path, stored: str) -> str | None:
    try:
        found = graph_metadata(path.read_bytes(), str(path))
    except RegistryError as exc:
        return str(exc)
    if _dumps(found) != _dumps(json.loads(stored)):
        return "the graph's anomtune metadata differs from the registry's record"
    return None


def resolve(
    ref: str | ModelRef,
    registry: str | os.PathLike | Registry | None = None,
    *,
    files: str | os.PathLike | None = None,
) -> tuple[bytes, ModelVersion]:
    """The bytes and record of a model reference, hash-checked.

    ``ref`` is ``name``, ``name/3``, ``name@alias`` or a path to an ``.onnx``
    file. ``registry`` is a registry location (default: ``ANOMTUNE_REGISTRY``
    or ``.anomtune/registry``) or an open :class:`Registry`.
    """
    parsed = parse_ref(ref)
    if parsed.is_file:
        path = parsed.path
        data = _store.read_model_file(path)
        meta = graph_metadata(data, str(path))
        lineage = dict(meta.get("lineage") or {})
        info = ModelVersion(
            name=None,
            version=None,
            sha256=_store.sha256_hex(data),
            size=len(data),
            file=path,
            metadata=meta,
            lineage=lineage,
        )
        return data, info
    if isinstance(registry, Registry):
        return registry.load(parsed)
    try:
        reg = Registry.open(registry, files=files)
    except RegistryNotFoundError as exc:
        raise RegistryNotFoundError(f"{parsed} is a registry reference, but {exc}") from exc
    with reg:
        return reg.load(parsed)
