"""Score a partitioned dataset on a Dask cluster (the ``anomtune[dask]`` extra).

:func:`score_dataset` takes a model reference and a set of CSV or Parquet
files (a glob pattern, a folder or a list) and scores every file as one task
on the cluster's workers, with the code ``anomtune score`` runs on one file
(:func:`anomtune.batch.score_file`), so each output equals what
``anomtune score`` writes for that file.

The model is pinned once, on the calling machine: a registry reference
(``name@alias``, ``name``) is resolved to its version and the sha256 of its
file, and a model file to its absolute path and sha256. Each worker process
opens it once, through the registry (which checks the file against its
recorded hash), checks that hash against the pinned one, and keeps the
session for every later partition, so an alias moved during a run changes
no partition's scores. The registry location is resolved on the calling
machine too (``--registry``, ``ANOMTUNE_REGISTRY`` or the default), so the
workers need the same paths (a shared folder or a database URL plus a shared
files folder), and the input and output folders must be reachable from every
worker under the same paths.

Outputs go to a hidden staging folder inside the output folder, one file per
input partition, each written whole before it is moved into place; only
when every partition has been scored are they moved to the output folder.
A failed or interrupted run leaves no output behind.

Serving path: imports Dask's ``distributed``, numpy, pandas, pyarrow and
onnxruntime only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from anomtune.errors import AnomtuneError, ConfigError, DataError

__all__ = ["ClusterError", "DatasetResult", "score_dataset"]

INPUT_SUFFIXES = (".csv", ".parquet", ".pq")
# Models a worker process keeps open (most recently used first out).
_CACHE_SIZE = 4
_MODELS: OrderedDict[tuple, object] = OrderedDict()
_MODELS_LOCK = threading.Lock()
EXTRA_HINT = "install the Dask extra: pip install 'anomtune[dask]'"


class ClusterError(AnomtuneError, RuntimeError):
    """The Dask cluster cannot be reached, or lost a worker while scoring."""


@dataclass
class DatasetResult:
    """What a run over a partitioned dataset did."""

    model: str
    sha256: str
    output: str
    rows: int = 0
    anomalies: int = 0
    threshold: float = 0.0
    seconds: float = 0.0
    #: One entry per input partition, in input order.
    files: list[dict] = field(default_factory=list)
    #: Addresses of the workers that scored partitions.
    workers: list[str] = field(default_factory=list)
    #: How many times a worker process opened the model in this run.
    model_opens: int = 0

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "sha256": self.sha256,
            "output": self.output,
            "files": len(self.files),
            "rows": self.rows,
            "anomalies": self.anomalies,
            "threshold": self.threshold,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
            "workers": len(self.workers),
            "model_opens": self.model_opens,
            "partitions": self.files,
        }


def score_dataset(
    model: str | os.PathLike,
    data: str | os.PathLike | list,
    output: str | os.PathLike,
    *,
    scheduler=None,
    registry: str | None = None,
    registry_files: str | None = None,
    output_format: str | None = None,
    id_column: str | None = None,
    explain: int = 0,
    threshold: float | None = None,
    connect_timeout: float = 10.0,
    on_progress=None,
    **read_options,
) -> DatasetResult:
    """Score every file of ``data`` on a Dask cluster into the folder ``output``.

    ``data`` is a glob pattern (``"data/*.parquet"``), a folder (its
    ``.csv``, ``.parquet`` and ``.pq`` files) or a list of paths. Each file
    gives one output in ``output`` with the same name (the suffix of
    ``output_format``, ``"csv"`` or ``"parquet"``, when given) and the
    columns ``anomtune score`` writes: the id column (or ``row``, from 1
    within the file), ``score``, ``is_anomaly`` and, with ``explain=K``,
    the K columns with the largest errors.

    ``scheduler`` is a scheduler address (``"tcp://host:8786"``), a
    ``distributed.Client``, ``"local"`` or ``"local:N"`` (a cluster of
    one, or N, worker processes on this machine for the length of the
    call), or None for the Dask client already made in this process.
    ``on_progress(rows, seconds)`` is called as partitions finish. Other
    keyword arguments (``sep`` and the other ways to read a CSV file) go to
    :func:`anomtune.batch.score_file` for every file.
    """
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"scoring on a Dask cluster needs Dask: {EXTRA_HINT}") from exc

    if output_format not in (None, "csv", "parquet"):
        raise ConfigError(f"output format is csv or parquet, not {output_format!r}")
    sources = _inputs(data)
    out_dir = Path(output).expanduser().absolute()
    targets = _targets(sources, out_dir, output_format)
    pinned = _pin(model, registry, registry_files)
    options = {"id_column": id_column, "explain": explain, "threshold": threshold}
    options.update({k: v for k, v in read_options.items() if v is not None})

    with _client(distributed, scheduler, connect_timeout) as client:
        created = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
        staging = out_dir / f".anomtune-staging-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir(parents=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ConfigError(f"cannot write to {output}: not a folder") from exc
        except OSError as exc:
            raise ConfigError(f"cannot write to {output}: {exc.strerror}") from exc
        result = DatasetResult(model=pinned["ref"], sha256=pinned["sha256"], output=str(out_dir))
        start = time.perf_counter()
        futures = []
        try:
            token = staging.name.rsplit("-", 1)[1]
            futures = client.map(
                _score_partition,
                [str(s) for s in sources],
                [str(staging / t.name) for t in targets],
                pinned=pinned,
                options=options,
                key=[f"anomtune-score-{token}-{i}" for i in range(len(sources))],
                pure=False,
            )
            order = {f.key: i for i, f in enumerate(futures)}
            done: list[dict | None] = [None] * len(futures)
            for future in distributed.as_completed(futures, loop=client.loop):
                part = _result(distributed, future, sources[order[future.key]])
                done[order[future.key]] = part
                result.rows += part["rows"]
                if on_progress is not None:
                    on_progress(result.rows, time.perf_counter() - start)
            # Every partition is scored: move the outputs into place.
            for target in targets:
                os.replace(staging / target.name, target)
            staging.rmdir()
        except BaseException:
            # Queued partitions are dropped; one being scored finds its
            # staging file gone and fails without writing anything.
            with contextlib.suppress(Exception):
                client.cancel(futures)
            shutil.rmtree(staging, ignore_errors=True)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    result.seconds = time.perf_counter() - start
    for part, target in zip(done, targets, strict=True):
        part["output"] = str(target)
        result.anomalies += part["anomalies"]
        result.model_opens += int(part.pop("opened"))
    result.files = done
    result.threshold = done[0]["threshold"]
    result.workers = sorted({part["worker"] for part in done})
    return result


def _inputs(data) -> list[Path]:
    """The input files: a glob pattern, a folder's data files, or a list of paths."""
    if isinstance(data, (list, tuple)):
        paths = [Path(p) for p in data]
        described = "the given list"
    else:
        text = os.path.expanduser(str(data))
        described = str(data)
        if Path(text).is_dir():
            paths = [p for p in sorted(Path(text).iterdir()) if p.suffix.lower() in INPUT_SUFFIXES]
        elif any(c in text for c in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            paths = [p for p in paths if p.is_file()]
        else:
            paths = [Path(text)]
    if not paths:
        raise DataError(f"no data files match {described}")
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix.lower() not in INPUT_SUFFIXES:
            raise DataError(f"{path}: not a .csv, .parquet or .pq file")
    return [p.absolute() for p in paths]


def _targets(sources: list[Path], out_dir: Path, output_format: str | None) -> list[Path]:
    """One output path per input: its name in ``out_dir``, suffix by ``output_format``."""
    targets, seen = [], {}
    inputs = {s.resolve() for s in sources}
    for source in sources:
        suffix = source.suffix if output_format is None else f".{output_format}"
        target = out_dir / (source.stem + suffix)
        if target.name in seen:
            raise ConfigError(
                f"{seen[target.name]} and {source} would both be written to {target}; "
                "score files with different names"
            )
        if target.resolve() in inputs:
            raise ConfigError(f"{target} is an input file; give another output folder")
        seen[target.name] = source
        targets.append(target)
    return targets


def _pin(model, registry: str | None, registry_files: str | None) -> dict:
    """The model as the workers open it: exact reference, registry location, sha256.

    Resolved here, once, so that every partition gets the same model
    version (an alias moved during the run is not followed) and the
    workers need neither this machine's environment nor its current folder.
    """
    from anomtune.registry import locate_registry, parse_ref, resolve

    text = str(model)
    parsed = parse_ref(text) if not Path(text).is_file() else parse_ref(Path(text))
    if parsed.is_file:
        path = Path(parsed.path).expanduser().absolute()
        _, info = resolve(path)
        return {
            "ref": str(path),
            "registry": None,
            "files": None,
            "sha256": info.sha256,
            "display": text,
        }
    location = locate_registry(registry, registry_files)
    _, info = resolve(parsed, registry=location.url, files=location.files)
    return {
        "ref": info.ref,
        "registry": location.url,
        "files": str(location.files),
        "sha256": info.sha256,
        "display": text,
    }


@contextlib.contextmanager
def _client(distributed, scheduler, timeout: float):
    """A Dask client for ``scheduler``; one made here is closed on exit."""
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is None:
        try:
            yield distributed.get_client()
        except ValueError as exc:
            raise ConfigError(
                "no Dask client in this process: give a scheduler address or 'local'"
            ) from exc
        return
    text = str(scheduler).strip()
    if text == "local" or text.startswith("local:"):
        workers = text.partition(":")[2]
        if workers and not (workers.isdigit() and int(workers) > 0):
            raise ConfigError(f"'local:N' takes a number of worker processes, not {workers!r}")
        with (
            distributed.LocalCluster(
                n_workers=int(workers) if workers else None,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            yield client
        return
    if not text:
        raise ConfigError("give the Dask scheduler's address, e.g. tcp://host:8786, or 'local'")
    try:
        client = distributed.Client(text, timeout=timeout, set_as_default=False)
    except ValueError as exc:
        raise ConfigError(
            f"not a Dask scheduler address: {text!r} ({exc}); e.g. tcp://host:8786"
        ) from exc
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {text} within {timeout:g} s; "
            "check the address, or start one with: dask scheduler"
        ) from exc
    with client:
        yield client


def _result(distributed, future, source: Path) -> dict:
    """A partition's summary, or its error as one line naming the file."""
    try:
        return future.result()
    except AnomtuneError as exc:
        message = str(exc)
        if str(source) not in message:
            with contextlib.suppress(Exception):
                exc = type(exc)(f"{source}: {message}")
        raise exc from None
    except distributed.client.FutureCancelledError as exc:
        raise ClusterError(f"{source}: the cluster cancelled its task ({exc})") from exc
    except distributed.KilledWorker as exc:
        raise ClusterError(
            f"{source}: the Dask workers scoring it died (out of memory?); see the worker logs"
        ) from exc
    except ModuleNotFoundError as exc:
        raise ClusterError(
            f"the Dask workers cannot import {exc.name!r}: install anomtune on them"
        ) from exc


# -- on the workers ----------------------------------------------------------------


def _open_model(pinned: dict):
    """``(scorer, opened)``: the pinned model, opened once per worker process."""
    key = (pinned["ref"], pinned["registry"], pinned["files"], pinned["sha256"])
    with _MODELS_LOCK:
        scorer = _MODELS.get(key)
        if scorer is not None:
            _MODELS.move_to_end(key)
            return scorer, False
        from anomtune.registry import IntegrityError, resolve
        from anomtune.scoring import Scorer

        ref = Path(pinned["ref"]) if pinned["registry"] is None else pinned["ref"]
        data, info = resolve(ref, registry=pinned["registry"], files=pinned["files"])
        if info.sha256 != pinned["sha256"]:
            raise IntegrityError(
                f"{pinned['display']}: the model file changed since the run started "
                f"(sha256 {info.sha256[:12]}, expected {pinned['sha256'][:12]})"
            )
        scorer = Scorer(data, source=pinned["display"])
        scorer.info = info
        _MODELS[key] = scorer
        while len(_MODELS) > _CACHE_SIZE:
            _MODELS.popitem(last=False)
        return scorer, True


def _score_partition(source: str, target: str, *, pinned: dict, options: dict) -> dict:
    """Score one input file into ``target`` (written whole, then moved into place)."""
    from anomtune.batch import score_file

    scorer, opened = _open_model(pinned)
    # A staging folder removed by a failed or interrupted run is not made
    # again (score_file makes missing parent folders): the run is over.
    if not Path(target).parent.is_dir():
        raise ClusterError(f"{source}: the run this partition belongs to has ended")
    done = score_file(scorer, source, target, **options)
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = f"pid {os.getpid()}"
    return {
        "input": source,
        "rows": done.rows,
        "anomalies": done.anomalies,
        "seconds": round(done.seconds, 3),
        "threshold": done.threshold,
        "worker": worker,
        "opened": opened,
    }
