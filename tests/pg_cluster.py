"""A throwaway PostgreSQL server for the tests: a new cluster in a temporary folder.

The cluster listens on 127.0.0.1 on a free port (its unix socket stays in the
temporary folder), trusts every local connection, and has a superuser
``anomtune`` and a database ``anomtune``. PostgreSQL refuses to run as root,
so under root the server runs as the ``postgres`` system user (or ``nobody``),
which owns the folder. Standard library only: CI runs it before the virtual
environment exists.

    python3 tests/pg_cluster.py start      # prints shell 'export' lines
    python3 tests/pg_cluster.py stop DIR   # stops the server and removes DIR

``start`` prints ``ANOMTUNE_TEST_POSTGRES_URL`` (a SQLAlchemy URL of the
``anomtune`` database) and ``ANOMTUNE_TEST_POSTGRES_DIR`` (the folder to give
``stop``). The test suite's ``postgres_server`` fixture uses the same
functions when no server is given.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "anomtune"
DATABASE = "anomtune"
_SETTINGS = (
    # A scratch server: durability is not wanted, speed is.
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
)


class ClusterError(RuntimeError):
    """The server could not be found, created or started."""


@dataclass(frozen=True)
class Cluster:
    root: Path
    port: int
    url: str


def find_bin_dir() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    # Debian keeps them off the PATH, one folder per major version.
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ClusterError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _run(cmd: list[str], user, cwd: Path) -> None:
    if user is not None:
        cmd = ["runuser", "-u", user.pw_name, "--", *cmd]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ClusterError(f"{Path(cmd[0]).name} failed: {' / '.join(detail[-3:])}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(bin_dir: Path | None = None) -> Cluster:
    """Create and start a cluster in a new temporary folder (see the module text)."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise ClusterError("PostgreSQL's initdb was not found (Debian: apt-get install postgresql)")
    user = _server_user()
    # Under /tmp rather than $TMPDIR: the server user must reach the folder, and
    # the path of its unix socket must stay short.
    root = Path(
        tempfile.mkdtemp(prefix="anomtune-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    )
    try:
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        data = root / "data"
        _run(
            [
                str(bin_dir / "initdb"),
                "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync",
            ],
            user,
            root,
        )  # fmt: skip
        port = _start_server(bin_dir, root, user)
        # A client program: any user may run it.
        _run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER,
             DATABASE],
            None,
            root,
        )  # fmt: skip
    except BaseException:
        stop(root, bin_dir)
        raise
    url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
    return Cluster(root, port, url)


def _start_server(bin_dir: Path, root: Path, user) -> int:
    last = None
    for _ in range(5):  # another program may take the free port first
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} {_SETTINGS}"
        try:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"),
                 "-w", "-t", "60", "-o", options, "start"],
                user,
                root,
            )  # fmt: skip
            return port
        except ClusterError as exc:
            last = exc
    log = root / "server.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise ClusterError(f"{last} {' / '.join(tail)}".strip())


def stop(root: str | Path, bin_dir: Path | None = None) -> None:
    """Stop the server of a cluster made by :func:`start` and remove its folder."""
    root = Path(root)
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is not None and (root / "data" / "postmaster.pid").exists():
        user = _server_user()
        try:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w",
                 "stop"],
                user,
                root,
            )  # fmt: skip
        except ClusterError as exc:
            print(f"pg_cluster: {exc}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"] and len(argv) == 1:
        try:
            cluster = start()
        except ClusterError as exc:
            print(f"pg_cluster: {exc}", file=sys.stderr)
            return 2
        print(f"export ANOMTUNE_TEST_POSTGRES_URL={shlex.quote(cluster.url)}")
        print(f"export ANOMTUNE_TEST_POSTGRES_DIR={shlex.quote(str(cluster.root))}")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        stop(argv[1])
        return 0
    print("usage: pg_cluster.py start | stop DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
