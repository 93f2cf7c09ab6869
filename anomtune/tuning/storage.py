"""Where studies live: opening an Optuna storage, for tuning or read-only, and trial states."""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

from anomtune.errors import ConfigError

__all__ = [
    "count_states",
    "fail_orphaned_trials",
    "fail_reason",
    "open_existing_storage",
    "open_storage",
]

# The trial states a summary counts, always present even when zero.
STATES = ("complete", "pruned", "fail", "running", "waiting")


def open_storage(storage: str | None, workspace: str | Path = ".anomtune"):
    """An Optuna storage from a URL or a file path (``None``: the workspace journal).

    Database URLs (``sqlite:///``, ``postgresql://``, ...) get an
    ``RDBStorage`` with heartbeats, so trials of a killed worker are marked
    failed. Any other value is a journal file, which is safe for several
    processes on one machine. Returns the storage and its label.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        Path(workspace).mkdir(parents=True, exist_ok=True)
        storage = str(Path(workspace) / "studies.journal")
    if "://" in storage:
        return _rdb_storage(storage), storage
    path = Path(storage)
    if path.is_dir():
        raise ConfigError(f"storage {storage!r} is a folder; give a journal file path or a URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # An absolute path: the lock is a symlink to the journal, and with a
        # relative target a lock left by a killed process would resolve to
        # nothing, so it would never be taken over after its grace period.
        backend = JournalFileBackend(str(path.resolve()))
        return optuna.storages.JournalStorage(backend), str(path)
    except OSError as exc:
        raise ConfigError(f"cannot open journal storage {storage!r}: {exc.strerror}") from exc


def open_existing_storage(storage: str | None, workspace: str | Path = ".anomtune"):
    """The storage and its label, creating nothing; ``(None, label)`` when the
    default journal does not exist yet.

    For readers (``anomtune studies``, the report): a missing journal or
    SQLite file given by name is an error, and a database without Optuna's
    tables is not given any.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        default = Path(workspace) / "studies.journal"
        if not default.is_file():
            return None, str(default)
        storage = str(default)
    if "://" in storage:
        if storage.startswith("sqlite:"):
            database = _sqlite_file(storage)
            if database is not None and not Path(database).is_file():
                raise ConfigError(f"storage {storage!r}: no SQLite database at {database}")
        try:
            return optuna.storages.RDBStorage(storage, skip_table_creation=True), storage
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL
            raise ConfigError(f"cannot open storage {storage!r}: {_first_line(exc)}") from exc
    path = Path(storage)
    if not path.exists():
        raise ConfigError(
            f"storage {storage!r}: no such journal file (anomtune tune --storage creates it)"
        )
    if path.is_dir():
        raise ConfigError(f"storage {storage!r} is a folder; give a journal file path or a URL")
    try:
        backend = JournalFileBackend(str(path.resolve()))
        return optuna.storages.JournalStorage(backend), storage
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"storage {storage!r} is not an Optuna journal file ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from exc


def _sqlite_file(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # a URL SQLAlchemy cannot parse is reported when it is opened
        return None
    return database if database and database != ":memory:" else None


def _rdb_storage(url: str, attempts: int = 8):
    """An Optuna ``RDBStorage`` with heartbeats; its tables are created if missing.

    Processes that open a new database at the same moment all create the
    tables; PostgreSQL lets one of them win and fails the others with a
    unique-key or "already exists" error, so those try again (and find the
    tables made).
    """
    import optuna
    from sqlalchemy import exc as sa_exc

    for attempt in range(attempts):
        try:
            # Heartbeats are marked experimental; the warning is not the user's business.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
            if attempt == attempts - 1:
                raise ConfigError(f"cannot open storage {url!r}: {_first_line(exc)}") from exc
            time.sleep(0.05 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL
            raise ConfigError(f"cannot open storage {url!r}: {_first_line(exc)}") from exc
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def count_states(trials) -> dict[str, int]:
    """How many of ``trials`` are in each state, by lower-case state name."""
    counts = dict.fromkeys(STATES, 0)
    for t in trials:
        key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def fail_reason(trial) -> str:
    """Why a trial failed; empty for the others."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL:
        return ""
    return trial.user_attrs.get("fail_reason") or (
        "no reason recorded: its worker process ended or lost the storage "
        "(a database storage fails such a trial when its heartbeat stops)"
    )


def fail_orphaned_trials(study) -> int:
    """Mark as failed the running trials whose worker process on this host is gone.

    Database storages do this with heartbeats; a journal file has none, so a
    trial left ``RUNNING`` by a killed process is recognised by its recorded
    host and process id, and failed through ``Study.tell``.
    """
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        w_host, _, pid = worker.rpartition(":")
        if w_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        # Optuna has no public way to set a user attribute of a trial this
        # process did not start, so the reason goes through the storage here,
        # the one place that uses its private API; the state change is public.
        study._storage.set_trial_user_attr(
            t._trial_id, "fail_reason", "worker process ended while the trial ran"
        )
        try:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process finished it a moment ago
        failed += 1
    return failed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
