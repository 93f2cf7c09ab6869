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
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomtune.errors import ConfigError, DataError
from anomtune.files import AtomicFile, make_dirs
from anomtune.scoring import Scorer, category_text

__all__ = ["BatchResult", "score_file"]

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
        }


def _is_parquet(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def _header(source: str, sep: str) -> list[str]:
    import csv

    if source == "-":
        head = sys.stdin.buffer.peek(1 << 16)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{source}: no such file")
        if path.is_dir():
            raise DataError(f"{source}: is a folder, not a data file")
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    if not head.strip():
        raise DataError(f"{source}: the input is empty")
    if b"\x00" in head:
        raise DataError(f"{source}: not a text CSV file (it contains NUL bytes)")
    line = head.decode("utf-8", errors="replace").splitlines()[0]
    return next(csv.reader(io.StringIO(line), delimiter=sep))


def _batches(source: str, needed: list[str], numeric: list[str], sep: str) -> Iterator:
    """Arrow record batches of the needed columns, numeric ones typed as float64."""
    import pyarrow as pa

    if _is_parquet(source):
        import pyarrow.parquet as pq

        if source == "-":
            raise ConfigError("Parquet cannot be read from stdin; give a file")
        try:
            # Without pre-buffering, a row group is read column by column as
            # batches are taken, not held whole in memory beforehand.
            pf = pq.ParquetFile(source, pre_buffer=False)
        except FileNotFoundError as exc:
            raise DataError(f"{source}: no such file") from exc
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{source}: cannot read Parquet: {exc}") from exc
        names = pf.schema_arrow.names
        _check_present(needed, names, source)
        # One reading thread: the batches are read ahead in a thread of their
        # own while onnxruntime's threads score the previous ones.
        yield from pf.iter_batches(batch_size=PARQUET_ROWS, columns=needed, use_threads=False)
        return
    import pyarrow.csv as pacsv

    names = _header(source, sep)
    _check_present(needed, names, source)
    stream = sys.stdin.buffer if source == "-" else source
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                include_columns=needed,
                column_types={name: pa.float64() for name in numeric},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowException as exc:
        raise DataError(f"{source}: {_arrow_message(exc, numeric, names, source, sep)}") from exc
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowException as exc:
            raise DataError(
                f"{source}: {_arrow_message(exc, numeric, names, source, sep)}"
            ) from exc
        yield batch


def _arrow_message(
    exc: Exception, numeric: list[str], names: list[str], source: str, sep: str
) -> str:
    text = str(exc).strip().splitlines()[0]
    # Arrow numbers the file's columns from 0 and quotes the value it could not convert.
    found = re.search(
        r"CSV column #(\d+): CSV conversion error to double: invalid value '(.*)'$", text
    )
    if found and int(found[1]) < len(names):
        index, value = int(found[1]), found[2]
        return (
            f"column {names[index]!r} is numeric but {value!r}"
            f"{_line_of(source, sep, index, value)} is not a number"
        )
    if "conversion error to double" in text:
        return f"a numeric column holds a value that is not a number ({text})"
    return f"cannot parse CSV: {text}"


def _line_of(source: str, sep: str, index: int, value: str) -> str:
    """`` at line N`` for the first row holding ``value`` in column ``index`` of a file."""
    import csv

    if source == "-":
        return ""  # stdin cannot be read again
    try:
        with open(source, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=sep)
            end = 0
            for row in reader:
                start, end = end + 1, reader.line_num
                if start > 1 and len(row) > index and row[index] == value:
                    return f" at line {start}"
    except (OSError, csv.Error):
        pass
    return ""


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
    numeric: np.ndarray  # float32, C order, one column per numeric feature
    categorical: np.ndarray | None  # strings, one column per categorical feature
    ids: object | None  # the id column (an Arrow chunked array)
    labels: np.ndarray | None  # bool, True for rows labeled positive

    def feeds(self, start: int, stop: int) -> dict:
        feeds = {"numeric": self.numeric[start:stop]}
        if self.categorical is not None:
            feeds["categorical"] = self.categorical[start:stop]
        return feeds


def _chunks(
    source: str,
    scorer: Scorer,
    needed: list[str],
    sep: str,
    id_column: str | None,
    label: str | None,
    positive: str,
) -> Iterator[_Chunk]:
    """The rows of ``source`` in chunks of about :data:`CHUNK_CELLS` feature values."""
    target = max(1024, min(MAX_CHUNK_ROWS, CHUNK_CELLS // max(1, len(scorer.feature_names))))
    pending: list = []
    count = first = 0
    for batch in _batches(source, needed, scorer.numeric, sep):
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= target:
            yield _chunk(pending, count, first, scorer, source, id_column, label, positive)
            first += count
            pending, count = [], 0
    if pending:
        yield _chunk(pending, count, first, scorer, source, id_column, label, positive)


def _chunk(
    batches: list,
    n: int,
    first_row: int,
    scorer: Scorer,
    source: str,
    id_column: str | None,
    label: str | None,
    positive: str,
) -> _Chunk:
    import pyarrow as pa

    # Arrow columns are copied straight into one float32 matrix, batch by batch.
    numeric = np.empty((n, len(scorer.numeric)), dtype=np.float32)
    start = 0
    for batch in batches:
        stop = start + batch.num_rows
        for j, name in enumerate(scorer.numeric):
            numeric[start:stop, j] = _numeric_values(batch.column(name), name, source)
        start = stop
    bad = np.isinf(numeric)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{source}: column {scorer.numeric[col]!r} has an infinite or out-of-range "
            f"value at row {first_row + int(row) + 1}"
        )
    categorical = None
    if scorer.categorical:
        categorical = np.concatenate([_categories(b, scorer.categorical) for b in batches])
    ids = None
    if id_column is not None:
        ids = pa.chunked_array([b.column(id_column) for b in batches])
    labels = None
    if label is not None:
        labels = np.concatenate([_labels(b, label, positive) for b in batches])
    return _Chunk(first_row, numeric, categorical, ids, labels)


def _numeric_values(column, name: str, source: str) -> np.ndarray:
    """An Arrow column as NumPy numbers (missing values as NaN); no copy when possible."""
    try:
        values = column.to_numpy(zero_copy_only=False)
    except Exception as exc:  # Arrow raises several types for unconvertible data
        raise DataError(f"{source}: column {name!r} is not numeric") from exc
    if values.dtype.kind not in "fiub":
        raise DataError(f"{source}: column {name!r} is not numeric")
    return values


def _categories(batch, names: list[str]) -> np.ndarray:
    """The categorical columns of a batch as text (missing values as "")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    block = np.empty((batch.num_rows, len(names)), dtype=object)
    for j, name in enumerate(names):
        column = batch.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            block[:, j] = pc.fill_null(column, "").to_numpy(zero_copy_only=False)
        else:
            values = column.to_pylist()
            block[:, j] = ["" if v is None else category_text(v) for v in values]
    return block.astype(str)


def _score_chunk(scorer: Scorer, chunk: _Chunk, explain: bool) -> tuple:
    """Scores (and per-feature errors with ``explain``) of a chunk.

    The session is called on slices of the scorer's ``slice_rows`` rows: the
    graph's intermediate tensors stay in the CPU cache, and small, as its
    memory arena keeps the largest size it has ever needed. Only the outputs
    used are asked for.
    """
    outputs = [o.name for o in scorer.session.get_outputs()[: 2 if explain else 1]]
    n = len(chunk.numeric)
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


def _labels(batch, label: str, positive: str) -> np.ndarray:
    values = batch.column(label).to_pylist()
    if any(v is None for v in values):
        raise DataError(f"label column {label!r} has a missing value")
    return np.fromiter(
        (category_text(v).strip().lower() == positive for v in values),
        dtype=bool,
        count=len(values),
    )


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
    sep: str = ",",
    on_progress: Callable[[int, float], None] | None = None,
) -> BatchResult:
    """Score ``source`` (a path or ``-`` for stdin) into ``output`` (a path or ``-``).

    Output columns: the id column (or ``row``, counting data rows from 1),
    ``score``, ``is_anomaly`` and, with ``explain=K``, the K columns with the
    largest reconstruction errors and their share of the row's error.
    ``threshold`` replaces the model's threshold; ``fpr`` picks the threshold
    that flags at most that share of the rows labeled normal (a first pass
    over the file). ``evaluate`` adds AUC-ROC, AUC-PR and F1 against
    ``label``.
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
    positive = str((scorer.metadata.get("schema") or {}).get("positive") or "1").lower()
    needed = list(
        dict.fromkeys(scorer.feature_names + [c for c in (id_column, label) if c is not None])
    )
    result = BatchResult(output=output)
    rule = scorer.metadata.get("threshold_rule", "stored with the model")
    if threshold is None and fpr is not None:
        if source == "-":
            raise ConfigError("--threshold-at-fpr reads the input twice; give a file, not stdin")
        normal = []
        for chunk in _prefetched(_chunks(source, scorer, needed, sep, None, label, positive)):
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
        chunks = _chunks(
            source, scorer, needed, sep, id_column, label if evaluate else None, positive
        )
        # The next chunk is read and converted in a thread while this one is scored.
        for chunk in _prefetched(chunks):
            n = len(chunk.numeric)
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
