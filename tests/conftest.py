"""Shared generated data and helpers for the tests, and PostgreSQL databases for the
tests that need a server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pg_cluster
import pytest

from anomtune.cli import main


@dataclass(frozen=True)
class PlantedOutliers:
    """Rows on a curved 2-d manifold in 10 dimensions, with planted outliers.

    Every outlier takes each feature's value from a different normal row, so
    its features have exactly the normal rows' marginal distributions; only
    the relations between features give it away. Scores that ignore those
    relations (an untrained autoencoder, random scores) reach an AUC-ROC near
    0.5 on it.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def make_planted_outliers(
    seed: int = 0,
    *,
    n_rows: int = 600,
    n_features: int = 10,
    latent: int = 2,
    outlier_share: float = 0.05,
) -> PlantedOutliers:
    """Half the rows for training (outliers included), half held out."""
    rng = np.random.default_rng(seed)
    n_out = round(outlier_share * n_rows)
    n_normal = n_rows - n_out
    mixing = rng.normal(size=(latent, n_features))
    codes = rng.normal(size=(n_normal, latent))
    normal = np.tanh(codes @ mixing) + 0.05 * rng.normal(size=(n_normal, n_features))
    donors = rng.integers(0, n_normal, size=(n_out, n_features))
    outliers = normal[donors, np.arange(n_features)]
    X = np.vstack([normal, outliers])
    y = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_out, dtype=int)]
    order = rng.permutation(n_rows)
    X, y = X[order], y[order]
    half = n_rows // 2
    return PlantedOutliers(X[:half], y[:half], X[half:], y[half:])


@pytest.fixture(scope="session")
def planted_outliers() -> PlantedOutliers:
    """600 rows (5% outliers) on a 2-d manifold in 10 dimensions, seed 0."""
    return make_planted_outliers(0)


@pytest.fixture(scope="session")
def gaussian_rows() -> np.ndarray:
    """80 rows of 6 independent standard normal features, seed 0 (read-only)."""
    X = np.random.default_rng(0).normal(size=(80, 6))
    X.setflags(write=False)
    return X


# -- PostgreSQL ------------------------------------------------------------------

POSTGRES_ENV = "ANOMTUNE_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _psycopg_url(url: str) -> str:
    """``url`` with the psycopg (version 3) driver when it names none."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a database on a PostgreSQL server where the tests may create databases.

    ``ANOMTUNE_TEST_POSTGRES_URL`` names one (CI starts a throwaway server
    and sets it); otherwise, when PostgreSQL's programs are installed, a
    throwaway server is started for this test process (with pytest-xdist,
    one per worker) and stopped at the end. Without either the tests are
    skipped, except under CI, where that is an error.
    """
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield _psycopg_url(url)
        return
    if pg_cluster.find_bin_dir() is None:
        message = (
            f"PostgreSQL is not installed (no initdb) and {POSTGRES_ENV} is not set; "
            "install it (Debian: apt-get install postgresql) or point the variable at a server"
        )
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        cluster = pg_cluster.start()
    except pg_cluster.ClusterError as exc:
        pytest.fail(f"cannot start a throwaway PostgreSQL server: {exc}", pytrace=False)
    try:
        yield cluster.url
    finally:
        pg_cluster.stop(cluster.root)


@pytest.fixture()
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database of its own for one test (dropped afterwards)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = f"anomtune_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# -- tuning runs ---------------------------------------------------------------------

# One tiny network, three epochs: the cheapest real tune, for tests about
# everything around the search.
TINY_SPACE = """
epochs = 3
[n_layers]
low = 1
high = 1
[width]
low = 8
high = 8
[batch_size]
choices = [128]
"""


FAST_SPACE = """
epochs = 6
[n_layers]
type = "int"
low = 1
high = 2
grid = [1]
[width]
type = "int"
low = 8
high = 16
grid = [8, 16]
[batch_size]
choices = [64, 128]
grid = [128]
[learning_rate]
grid = [0.003]
"""


def write_planted(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Normal rows on a 2-d plane in 6 dimensions, 10% of rows off it."""
    rng = np.random.default_rng(seed)
    n_anom = n // 10
    basis = rng.normal(size=(2, 6))
    normal = rng.normal(size=(n - n_anom, 2)) @ basis + 0.05 * rng.normal(size=(n - n_anom, 6))
    anomalies = rng.normal(scale=2.0, size=(n_anom, 6))
    X = np.vstack([normal, anomalies])
    y = np.r_[np.zeros(n - n_anom, int), np.ones(n_anom, int)]
    order = rng.permutation(n)
    frame = pd.DataFrame(X[order], columns=[f"x{i}" for i in range(6)])
    frame["label"] = y[order]
    frame.to_csv(path, index=False)
    return path


def planted_folder(tmp_path: Path, monkeypatch, n: int) -> Path:
    """``tmp_path`` as the working folder, with planted.csv (``n`` rows) and
    space.toml (FAST_SPACE), for :func:`tune_planted`."""
    monkeypatch.chdir(tmp_path)
    write_planted(tmp_path / "planted.csv", n=n)
    (tmp_path / "space.toml").write_text(FAST_SPACE)
    return tmp_path


def tune_planted(*extra) -> dict:
    """``anomtune tune`` on a :func:`planted_folder`: its JSON summary."""
    out = ok(
        "tune", "planted.csv", "--label", "label", "--space", "space.toml",
        "--quiet", "--json", *extra,
    )  # fmt: skip
    return json.loads(out)


def run(*args) -> tuple[int, str, str]:
    """The real entry point in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def ok(*args) -> str:
    """A command that must succeed: its stdout."""
    code, out, err = run(*args)
    assert code == 0, err
    return out


def refused(*args) -> str:
    """A command that must fail cleanly: exit 2, one line on stderr, no traceback."""
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("anomtune: error: ") and "Traceback" not in err
    return err


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


# -- a real HTTP server ----------------------------------------------------------


@contextlib.contextmanager
def running(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its URL."""
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on the accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
