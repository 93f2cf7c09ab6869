"""Score CSV or Parquet files of any size in chunks, with onnxruntime alone.

The input is read by Arrow's streaming readers in blocks of bounded size
(CSV parsing runs in Arrow's threads); the blocks are gathered into chunks,
each copied from the Arrow columns into one float32 matrix, and the next
chunk is read and converted in a thread while the current one is scored.
Results are written as they come, so memory stays flat however large the
file. The output is written to a
temporary file beside the target and moved into place at the end: an error
half-way leaves nothing behind.

Serving path: imports numpy, pandas, pyarrow and onnxruntime only.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomtune import inputs
from anomtune.errors import ConfigError, DataError, first_line
from anomtune.files import AtomicFile, make_dirs
from anomtune.inputs import Dialect
from anomtune.scoring import Scorer

__all__ = ["BatchResult", "labeled_scores", "open_reading", "score_file"]

# CSV block size. Arrow's streaming reader parses one block at a time but reads
# up to 32 blocks ahead, so this also bounds the raw text held in memory.
CHUNK_BYTES = 1 << 20
PARQUET_ROWS = 16_384
# Rows gathered into one float32 matrix per step: about 8 MB of features, at
# most 65,536 rows (fewer for wide tables).
CHUNK_CELLS = 2 << 20
MAX_CHUNK_ROWS = 65_536


@dataclass
class BatchResult:
    """What a scoring run did."""

    rows: int = 0
    anomalies: int = 0
    seconds: float = 0.0
    threshold: float = 0.0
    threshold_rule: str = ""
    metrics: dict | None = None
    output: str = ""
    columns: list[str] = field(default_factory=list)
    #: Set when far more rows were flagged than on the validation rows.
    flag_rate_warning: str | None = None

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "anomalies": self.anomalies,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "metrics": self.metrics,
            "output": self.output,
            "flag_rate_warning": self.flag_rate_warning,
        }


def _is_parquet(name: str) -> bool:
    return inputs.is_parquet(name)


@dataclass(frozen=True)
class Reading:
    """How to read one input: where from, its dialect (CSV) and its column names."""

    source: str
    dialect: Dialect | None
    names: list[str]

    def locate(self):
        """How rows of this input are named in errors: lines of a CSV file, else rows."""
        if self.dialect is not None and self.source != "-":
            return inputs.CsvLines(Path(self.source), self.dialect)
        return inputs.row_locator


def open_reading(
    source: str,
    *,
    sep: str | None = None,
    decimal: str | None = None,
    encoding: str | None = None,
) -> Reading:
    """Check that ``source`` (a path or ``-``) can be read; sniff a CSV's dialect."""
    if _is_parquet(source):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if source == "-":
            raise ConfigError("Parquet cannot be read from stdin; give a file")
        try:
            names = pq.ParquetFile(source).schema_arrow.names
        except FileNotFoundError as exc:
            raise DataError(f"{source}: no such file") from exc
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{source}: cannot read Parquet: {exc}") from exc
        return Reading(source, None, names)
    import csv

    if source == "-":
        head = sys.stdin.buffer.peek(inputs.HEAD_BYTES)[: inputs.HEAD_BYTES]
        complete = False
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{source}: no such file")
        if path.is_dir():
            raise DataError(f"{source}: is a folder, not a data file")
        with open(path, "rb") as fh:
            head = fh.read(inputs.HEAD_BYTES)
            complete = not fh.read(1)
    if not head.strip():
        raise DataError(f"{source}: the input is empty")
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{source}: not a text CSV file (it contains NUL bytes)")
    dialect = inputs._dialect_of(head, complete, sep, decimal, encoding, f"{source}: ")
    text, _ = inputs._decode_head(head, complete, dialect.encoding, f"{source}: ")
    line = text.lstrip("\ufeff").splitlines()[0]
    names = next(csv.reader(io.StringIO(line), delimiter=dialect.sep))
    return Reading(source, dialect, names)


def _batches(reading: Reading, needed: list[str]) -> Iterator:
    """Arrow record batches of the needed columns: CSV as text, Parquet as typed."""
    import pyarrow as pa

    source = reading.source
    _check_present(needed, reading.names, source)
    if reading.dialect is None:
        import pyarrow.parquet as pq

        # Without pre-buffering, a row group is read column by column as
        # batches are taken, not held whole in memory beforehand. One reading
        # thread: the batches are read ahead in a thread of their own while
        # onnxruntime's threads score the previous ones.
        pf = pq.ParquetFile(source, pre_buffer=False)
        yield from pf.iter_batches(batch_size=PARQUET_ROWS, columns=needed, use_threads=False)
        return
    import pyarrow.csv as pacsv

    dialect = reading.dialect
    stream = sys.stdin.buffer if source == "-" else source
    try:
        # Text in, converted by anomtune.inputs: the same rules as every other door.
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES, encoding=dialect.encoding),
            parse_options=pacsv.ParseOptions(delimiter=dialect.sep),
            convert_options=pacsv.ConvertOptions(
                include_columns=needed,
                column_types={name: pa.string() for name in needed},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowException as exc:
        raise DataError(f"{source}: cannot parse CSV: {first_line(exc)}") from exc
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowException as exc:
            raise DataError(f"{source}: cannot parse CSV: {first_line(exc)}") from exc
        yield batch


def _check_present(needed: list[str], names: list[str], source: str) -> None:
    import difflib

    present = set(names)
    for name in needed:
        if name not in present:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{source}: missing column {name!r}{hint}")


@dataclass
class _Chunk:
    """Consecutive data rows, ready for the graph."""

    first_row: int  # index of the chunk's first data row in the file, from 0
    feeds_all: dict  # the graph's inputs for every row of the chunk
    ids: object | None  # the id column (an Arrow chunked array)
    labels: np.ndarray | None  # bool, True for rows labeled positive

    @property
    def n(self) -> int:
        return len(self.feeds_all["numeric"])

    def feeds(self, start: int, stop: int) -> dict:
        return {name: value[start:stop] for name, value in self.feeds_all.items()}


def _chunks(
    reading: Reading,
    scorer: Scorer,
    id_column: str | None,
    label: str | None,
    positive: str,
) -> Iterator[_Chunk]:
    """The rows of an input in chunks of about :data:`CHUNK_CELLS` feature values."""
    spec = scorer.spec
    needed = list(dict.fromkeys(spec.sources + [c for c in (id_column, label) if c is not None]))
    target = max(1024, min(MAX_CHUNK_ROWS, CHUNK_CELLS // max(1, len(needed))))
    locate = reading.locate()
    pending: list = []
    count = first = 0
    for batch in _batches(reading, needed):
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= target:
            yield _chunk(pending, first, scorer, reading, locate, id_column, label, positive)
            first += count
            pending, count = [], 0
    if pending:
        yield _chunk(pending, first, scorer, reading, locate, id_column, label, positive)


def _chunk(
    batches: list,
    first_row: int,
    scorer: Scorer,
    reading: Reading,
    locate,
    id_column: str | None,
    label: str | None,
    positive: str,
) -> _Chunk:
    import pyarrow as pa

    def column(name):
        return pa.chunked_array([b.column(name) for b in batches])

    spec = scorer.spec
    decimal = reading.dialect.decimal if reading.dialect else None
    feeds = spec.feeds(
        {name: column(name) for name in spec.sources},
        locate=locate,
        where=f"{reading.source}: ",
        offset=first_row,
        decimal=decimal,
    )
    ids = column(id_column) if id_column is not None else None
    labels = None
    if label is not None:
        labels = _labels(column(label), label, positive, reading.source)
    return _Chunk(first_row, feeds, ids, labels)


def _labels(values, label: str, positive: str, source: str) -> np.ndarray:
    text = inputs.to_categories(values)
    if (text == "").any():
        raise DataError(f"{source}: label column {label!r} has a missing value")
    return np.char.lower(text.astype(str)) == positive


def _score_chunk(scorer: Scorer, chunk: _Chunk, explain: bool) -> tuple:
    """Scores (and per-feature errors with ``explain``) of a chunk.

    The session is called on slices of the scorer's ``slice_rows`` rows: the
    graph's intermediate tensors stay in the CPU cache, and small, as its
    memory arena keeps the largest size it has ever needed. Only the outputs
    used are asked for.
    """
    outputs = [o.name for o in scorer.session.get_outputs()[: 2 if explain else 1]]
    n = chunk.n
    step = max(1, int(scorer.slice_rows))
    parts = [
        scorer.session.run(outputs, chunk.feeds(start, min(n, start + step)))
        for start in range(0, n, step)
    ]
    if len(parts) == 1:
        scores, errors = parts[0][0], (parts[0][1] if explain else None)
    else:
        scores = np.concatenate([p[0] for p in parts])
        errors = np.concatenate([p[1] for p in parts]) if explain else None
    return scores, errors


def _prefetched(iterator: Iterator) -> Iterator:
    """Yield from ``iterator`` while its next item is produced in a thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, iterator, None)
        while True:
            item = future.result()
            if item is None:
                return
            future = pool.submit(next, iterator, None)
            yield item


def labeled_scores(
    scorer: Scorer,
    source: str,
    label: str,
    *,
    positive: str | None = None,
    **dialect: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, the model's own flags and the labels of every row of a labeled file.

    Read in chunks like :func:`score_file`, so memory holds only the three
    arrays. ``positive`` is the label value of an anomaly (default: the
    model's); ``dialect`` is :func:`open_reading`'s ``sep``, ``decimal`` and
    ``encoding``.
    """
    reading = open_reading(source, **dialect)
    if positive is None:
        positive = str((scorer.metadata.get("schema") or {}).get("positive") or "1")
    positive = inputs.category_text(positive).lower()
    scores, flags, labels = [], [], []
    for chunk in _prefetched(_chunks(reading, scorer, None, label, positive)):
        part = _score_chunk(scorer, chunk, False)[0]
        scores.append(part)
        flags.append(part > scorer.threshold)
        labels.append(chunk.labels)
    if not scores:
        raise DataError(f"{source}: no data rows")
    return np.concatenate(scores), np.concatenate(flags), np.concatenate(labels)


def threshold_at_fpr(scores_of_normal: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of the normal rows."""
    s = np.sort(np.asarray(scores_of_normal, dtype=np.float64))[::-1]
    if s.size == 0:
        raise DataError("--threshold-at-fpr needs labeled normal rows")
    k = int(np.floor(fpr * s.size))
    return float(s[min(k, s.size - 1)])


def score_file(
    scorer: Scorer,
    source: str,
    output: str,
    *,
    id_column: str | None = None,
    label: str | None = None,
    evaluate: bool = False,
    explain: int = 0,
    threshold: float | None = None,
    fpr: float | None = None,
    sep: str | None = None,
    decimal: str | None = None,
    encoding: str | None = None,
    on_progress: Callable[[int, float], None] | None = None,
) -> BatchResult:
    """Score ``source`` (a path or ``-`` for stdin) into ``output`` (a path or ``-``).

    Output columns: the id column (``id_column``, else the model's own id
    column when the input has it, else ``row``, counting data rows from 1),
    ``score``, ``is_anomaly`` and, with ``explain=K``, the K columns with the
    largest reconstruction errors and their share of the row's error.
    ``threshold`` replaces the model's threshold; ``fpr`` picks the threshold
    that flags at most that share of the rows labeled normal (a first pass
    over the file). ``evaluate`` adds AUC-ROC, AUC-PR and F1 against
    ``label``. A CSV input's separator, decimal mark and encoding are
    sniffed unless given.
    """
    import pyarrow as pa

    if explain < 0 or explain > len(scorer.feature_names):
        raise ConfigError(
            f"--explain takes 0 to {len(scorer.feature_names)} features, not {explain}"
        )
    if fpr is not None and not 0.0 <= fpr < 1.0:
        raise ConfigError(f"--threshold-at-fpr must be in [0, 1), not {fpr}")
    if fpr is not None and threshold is not None:
        raise ConfigError("give --threshold or --threshold-at-fpr, not both")
    if (evaluate or fpr is not None) and label is None:
        label = (scorer.metadata.get("schema") or {}).get("label")
        if label is None:
            raise ConfigError("--evaluate and --threshold-at-fpr need --label")
    reading = open_reading(source, sep=sep, decimal=decimal, encoding=encoding)
    if id_column is None and scorer.spec.id_column in reading.names:
        id_column = scorer.spec.id_column
    positive = str((scorer.metadata.get("schema") or {}).get("positive") or "1").lower()
    result = BatchResult(output=output)
    rule = scorer.metadata.get("threshold_rule", "stored with the model")
    if threshold is None and fpr is not None:
        if source == "-":
            raise ConfigError("--threshold-at-fpr reads the input twice; give a file, not stdin")
        normal = []
        for chunk in _prefetched(_chunks(reading, scorer, None, label, positive)):
            scores = _score_chunk(scorer, chunk, False)[0]
            normal.append(scores[~chunk.labels])
        threshold = threshold_at_fpr(np.concatenate(normal), fpr)
        rule = f"flags at most {fpr:g} of the rows labeled normal in {source}"
    elif threshold is not None:
        rule = "given on the command line"
    else:
        threshold = scorer.threshold
    result.threshold, result.threshold_rule = float(threshold), rule

    sink, finish, abort = _open_output(output)
    writer = None
    all_scores, all_labels = [], []
    start = time.perf_counter()
    rows = 0
    try:
        chunks = _chunks(reading, scorer, id_column, label if evaluate else None, positive)
        # The next chunk is read and converted in a thread while this one is scored.
        for chunk in _prefetched(chunks):
            n = chunk.n
            scores, errors = _score_chunk(scorer, chunk, explain > 0)
            flags = scores > threshold
            columns = {}
            if id_column is not None:
                columns[id_column] = chunk.ids
            else:
                columns["row"] = pa.array(np.arange(rows + 1, rows + n + 1, dtype=np.int64))
            columns["score"] = pa.array(scores)
            columns["is_anomaly"] = pa.array(flags.astype(np.int8))
            if explain:
                columns.update(_explain(errors, scorer.feature_names, explain))
            table = pa.table(columns)
            if writer is None:
                writer = _writer(sink, output, table.schema)
                result.columns = table.schema.names
            writer.write_table(table)
            if evaluate:
                all_scores.append(scores)
                all_labels.append(chunk.labels)
            rows += n
            result.anomalies += int(flags.sum())
            if on_progress is not None:
                on_progress(rows, time.perf_counter() - start)
        if writer is None:
            raise DataError(f"{source}: no data rows")
        writer.close()
        finish()
    except BaseException:
        abort()
        raise
    result.rows = rows
    result.seconds = time.perf_counter() - start
    if threshold == scorer.threshold:
        result.flag_rate_warning = scorer.flag_rate_warning(result.anomalies, rows)
    if evaluate:
        from anomtune.metrics import evaluate as metrics_of

        result.metrics = metrics_of(
            np.concatenate(all_labels).astype(np.int8), np.concatenate(all_scores), threshold
        )
    return result


def _explain(errors: np.ndarray, names: list[str], k: int) -> dict:
    import pyarrow as pa

    total = errors.sum(axis=1, keepdims=True)
    share = np.divide(errors, total, out=np.zeros_like(errors), where=total > 0)
    top = np.argsort(-errors, axis=1, kind="stable")[:, :k]
    names_arr = np.asarray(names, dtype=object)
    out = {}
    for i in range(k):
        idx = top[:, i]
        out[f"feature_{i + 1}"] = pa.array(names_arr[idx].tolist(), type=pa.string())
        out[f"share_{i + 1}"] = pa.array(np.take_along_axis(share, idx[:, None], 1)[:, 0])
    return out


def _open_output(output: str):
    """A binary sink plus finish/abort callbacks (atomic for files, 0644 less the umask)."""
    if output == "-":
        sink = sys.stdout.buffer
        return sink, sink.flush, lambda: None
    target = Path(output)
    if target.is_dir():
        raise ConfigError(f"{output}: is a folder; give a file name")
    created: list[Path] = []
    try:
        # Folders made for the output are removed again if scoring fails.
        created = make_dirs(target.parent)
        staged = AtomicFile(target)
    except (FileExistsError, NotADirectoryError) as exc:
        _remove_folders(created)
        raise ConfigError(f"cannot write {output}: {target.parent} is not a folder") from exc
    except OSError as exc:
        _remove_folders(created)
        raise ConfigError(f"cannot write {output}: {exc.strerror}") from exc

    def abort():
        staged.discard()
        _remove_folders(created)

    return staged.file, staged.commit, abort


def _remove_folders(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _writer(sink, output: str, schema):
    if _is_parquet(output):
        import pyarrow.parquet as pq

        return pq.ParquetWriter(sink, schema)
    import pyarrow.csv as pacsv

    return pacsv.CSVWriter(sink, schema)
