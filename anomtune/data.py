"""Labeled tables: read a CSV, decide the label, type the columns, split.

A :class:`Table` is what every other part of anomtune starts from: the
feature columns as a DataFrame, the 0/1 labels (1 = anomaly), an optional id
column kept for output, a :class:`Schema` and a content fingerprint.

Infinite values are rejected with an error naming the column and line:
they are almost always a bug upstream (a division by zero), and silently
treating them as missing would hide it. So are numbers beyond float32, which
every model computes in. Missing values (empty cells, ``NA``)
are allowed in feature columns and are imputed with the training median.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.errors import ConfigError, DataError
from anomtune.errors import first_line as _first_line

__all__ = [
    "Column",
    "Schema",
    "Split",
    "Table",
    "read_table",
    "split_rows",
    "split_unlabeled",
    "stratified_folds",
    "table_from_frame",
    "training_rows",
]

logger = logging.getLogger(__name__)

NUMERIC = "numeric"
CATEGORICAL = "categorical"

_TRUE_WORDS = {"true", "yes", "y", "t"}
_FALSE_WORDS = {"false", "no", "n", "f"}
# A string column whose non-missing values parse as numbers this often is a
# numeric column with junk in it, not a categorical column.
_NUMERIC_SHARE = 0.9
# Bytes read up front to check the header and sniff for binary content.
_HEAD_BYTES = 65536
# At most this many columns: far beyond any real table, and it stops a header of
# a million empty names before it costs time or memory.
MAX_COLUMNS = 100_000
# A header line longer than this is not read at all.
_MAX_HEADER_BYTES = 16 * 2**20
# Numbers beyond float32 cannot reach a model: training, the ONNX graph and
# scoring all compute in float32, where they would become infinite.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Separators worth suggesting when the header parses as a single column.
_OTHER_SEPARATORS = (";", "\t", "|", ",")


@dataclass(frozen=True)
class Column:
    """One feature column: its name, its kind and (once fitted) its categories."""

    name: str
    kind: str
    categories: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        out: dict = {"name": self.name, "kind": self.kind}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Column:
        cats = data.get("categories")
        return cls(data["name"], data["kind"], tuple(cats) if cats is not None else None)


@dataclass(frozen=True)
class Schema:
    """Ordered feature columns plus the label and id columns they came with."""

    columns: tuple[Column, ...]
    label: str | None = None
    positive: str | None = None
    id_column: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == NUMERIC]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == CATEGORICAL]

    def to_dict(self) -> dict:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "label": self.label,
            "positive": self.positive,
            "id_column": self.id_column,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        return cls(
            tuple(Column.from_dict(c) for c in data["columns"]),
            data.get("label"),
            data.get("positive"),
            data.get("id_column"),
        )


@dataclass
class Table:
    """Features, labels and ids of one data set, with schema and fingerprint."""

    features: pd.DataFrame
    labels: np.ndarray | None
    schema: Schema
    fingerprint: str
    ids: pd.Series | None = None
    source: str | None = None

    @property
    def n_rows(self) -> int:
        return len(self.features)

    @property
    def n_anomalies(self) -> int:
        return int(self.labels.sum()) if self.labels is not None else 0

    def describe(self) -> dict:
        """Rows, columns, anomaly count and fingerprint, for summaries."""
        out = {
            "source": self.source,
            "rows": self.n_rows,
            "features": len(self.schema.columns),
            "numeric": len(self.schema.numeric),
            "categorical": len(self.schema.categorical),
            "label": self.schema.label,
            "fingerprint": self.fingerprint,
        }
        if self.labels is not None:
            out["anomalies"] = self.n_anomalies
            out["anomaly_rate"] = round(self.n_anomalies / max(self.n_rows, 1), 6)
        return out


def read_table(
    path: str | Path,
    *,
    label: str | None = None,
    positive: object = None,
    features: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    id_column: str | None = None,
    categorical: Iterable[str] = (),
    sep: str = ",",
) -> Table:
    """Read a labeled CSV (or Parquet) file into a :class:`Table`.

    Parameters
    ----------
    path : str or Path
        The file. ``.parquet`` files are read as Parquet, anything else as CSV.
    label : str, optional
        The label column. Without it the table has no labels.
    positive : optional
        The label value that marks an anomaly. Needed only when the label's
        values are not 0/1 or true/false.
    features : list of str, optional
        Feature columns to use, in this order. Default: every column except
        the label, the id column and ``exclude``.
    exclude : iterable of str
        Columns to leave out.
    id_column : str, optional
        A column kept for output (scores are reported against it) but never
        used as a feature.
    categorical : iterable of str
        Columns to treat as categorical even if their values look numeric.
    sep : str
        The CSV field separator: one character (``"\\t"`` or ``"tab"`` mean a tab).

    Returns
    -------
    Table
    """
    path = Path(path)
    sep = _check_separator(sep)
    frame = _read_frame(path, sep)
    is_parquet = path.suffix.lower() == ".parquet"
    return _build_table(
        frame,
        label=label,
        positive=positive,
        features=features,
        exclude=exclude,
        id_column=id_column,
        categorical=categorical,
        source=str(path),
        locate=_row_locator if is_parquet else _CsvLines(path, sep),
    )


def _check_separator(sep: str) -> str:
    if sep in ("\\t", "tab"):
        return "\t"
    if not isinstance(sep, str) or len(sep) != 1:
        raise DataError(f"the CSV field separator must be one character, not {sep!r}")
    if sep in '"\r\n':
        raise DataError(f"{sep!r} cannot be the CSV field separator")
    return sep


def _read_frame(path: Path, sep: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataError(f"{path}: cannot read Parquet: {_first_line(exc)}") from exc
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            complete = not fh.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    if not head.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in head:
        raise DataError(f"{path}: not a text CSV file (it contains NUL bytes)")
    # The first 64 KiB may end inside a multi-byte character; an incremental
    # decoder keeps such a tail pending instead of calling it invalid.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        text = decoder.decode(head, final=complete)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    header_line = lines[0]
    if complete and len(lines) == 1:
        raise DataError(f"{path}: the file has a header but no data rows")
    if len(lines) == 1 and not complete:
        header_line = _long_header(path, sep)
    header = next(csv.reader(io.StringIO(header_line), delimiter=sep))
    if len(header) > MAX_COLUMNS:
        raise DataError(
            f"{path}: the header has {len(header):,} columns, more than anomtune reads "
            f"({MAX_COLUMNS:,})"
        )
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise DataError(f"{path}: duplicate column names: {', '.join(map(repr, dupes))}")
    try:
        frame = pd.read_csv(path, sep=sep, engine="pyarrow")
    except Exception as exc:  # pyarrow's parse errors are ArrowInvalid and friends
        where = _ragged_line(path, sep, len(header))
        raise DataError(f"{path}: cannot parse CSV{where}: {_first_line(exc)}") from exc
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    return frame


def _long_header(path: Path, sep: str) -> str:
    """The first line of a file whose header does not fit in the first read."""
    with path.open("rb") as fh:
        raw = fh.readline(_MAX_HEADER_BYTES + 1)
    if len(raw) > _MAX_HEADER_BYTES and not raw.endswith(b"\n"):
        # Count what was read: enough to say how wide the header is at least.
        n = raw.count(sep.encode()) + 1
        raise DataError(
            f"{path}: the header line is longer than {_MAX_HEADER_BYTES // 2**20} MiB "
            f"(at least {n:,} columns; anomtune reads at most {MAX_COLUMNS:,})"
        )
    try:
        return raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file") from exc


def _ragged_line(path: Path, sep: str, width: int) -> str:
    """`` at line N`` for the first row whose field count differs from the header's."""
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=sep)
            end = 0
            for row in reader:
                start, end = end + 1, reader.line_num
                if row and len(row) != width:
                    return f" at line {start}"
    except (OSError, csv.Error):
        pass
    return ""


def _missing_column(
    name: str, available: Sequence[str], what: str, source: str | None
) -> DataError:
    where = f"{source}: " if source else ""
    hint = ""
    names = [str(a) for a in available]
    same_but_case = [a for a in names if a.casefold() == str(name).casefold()]
    close = same_but_case[:1] or difflib.get_close_matches(name, names, n=1)
    # A header read as one column that contains a likely separator means the
    # file uses another separator; that explains the error better than a
    # near-miss name (which would be the whole header line).
    other = [s for s in _OTHER_SEPARATORS if len(available) == 1 and s in str(available[0])]
    if other:
        hint = f"; the file seems to use {other[0]!r} as the separator (pass --sep {other[0]!r})"
    elif close:
        hint = f"; did you mean {close[0]!r}?"
    shown = ", ".join(repr(str(a)) for a in list(available)[:12])
    more = f" and {len(available) - 12} more" if len(available) > 12 else ""
    return DataError(f"{where}{what} {name!r} not found (columns: {shown}{more}){hint}")


def table_from_frame(
    frame: pd.DataFrame,
    *,
    label: str | None = None,
    positive: object = None,
    features: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    id_column: str | None = None,
    categorical: Iterable[str] = (),
    source: str | None = None,
) -> Table:
    """Build a :class:`Table` from a DataFrame; see :func:`read_table`.

    Rows are taken in order; the frame's index is not used.
    """
    return _build_table(
        frame,
        label=label,
        positive=positive,
        features=features,
        exclude=exclude,
        id_column=id_column,
        categorical=categorical,
        source=source,
        locate=_row_locator,
    )


def _build_table(
    frame: pd.DataFrame,
    *,
    label: str | None,
    positive: object,
    features: Sequence[str] | None,
    exclude: Iterable[str],
    id_column: str | None,
    categorical: Iterable[str],
    source: str | None,
    locate: Callable[[int], str],
) -> Table:
    where = f"{source}: " if source else ""
    columns = [str(c) for c in frame.columns]
    # Positions, not index labels, identify rows from here on.
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{where}duplicate column names: {', '.join(map(repr, dupes))}")
    if frame.empty:
        raise DataError(f"{where}no data rows")

    labels = None
    positive_text = None
    if label is not None:
        if label not in columns:
            raise _missing_column(label, columns, "label column", source)
        labels, positive_text = _parse_labels(frame[label], label, positive, where, locate)

    if id_column is not None and id_column not in columns:
        raise _missing_column(id_column, columns, "id column", source)
    exclude = list(exclude)
    for name in exclude:
        if name not in columns:
            raise _missing_column(name, columns, "excluded column", source)
    reserved = {label, id_column}
    if features is not None:
        chosen = list(features)
        twice = sorted({c for c in chosen if chosen.count(c) > 1})
        if twice:
            raise DataError(f"{where}feature column(s) listed twice: {', '.join(map(repr, twice))}")
        for name in chosen:
            if name not in columns:
                raise _missing_column(name, columns, "feature column", source)
            if name in reserved:
                raise DataError(f"{where}column {name!r} cannot be both a feature and the label/id")
        chosen = [c for c in chosen if c not in exclude]
    else:
        chosen = [c for c in columns if c not in reserved and c not in exclude]
    if not chosen:
        raise DataError(f"{where}no feature columns left (only the label/id/excluded columns)")

    forced = set(categorical)
    for name in forced:
        if name not in chosen:
            raise _missing_column(name, chosen, "categorical column", source)

    feats = {}
    cols = []
    for name in chosen:
        series, kind = _type_column(frame[name], name, name in forced, where, locate)
        feats[name] = series
        cols.append(Column(name, kind))
    feature_frame = pd.DataFrame(feats, index=pd.RangeIndex(len(frame)))
    schema = Schema(tuple(cols), label=label, positive=positive_text, id_column=id_column)
    ids = frame[id_column].reset_index(drop=True) if id_column is not None else None
    return Table(
        features=feature_frame,
        labels=labels,
        schema=schema,
        fingerprint=fingerprint(feature_frame, labels),
        ids=ids,
        source=source,
    )


def _row_locator(position: int) -> str:
    """Where a row of a DataFrame or Parquet file is: its 1-based row number."""
    return f"row {int(position) + 1}"


class _CsvLines:
    """Where a data row of a CSV file is: the line it starts on.

    The file is read again only when an error needs a line number, and only
    up to that row. Blank lines (which the CSV reader skips) and quoted
    fields spanning several lines are counted, so the number is the one an
    editor shows.
    """

    def __init__(self, path: Path, sep: str):
        self.path = path
        self.sep = sep

    def __call__(self, position: int) -> str:
        position = int(position)
        try:
            with self.path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
                reader = csv.reader(fh, delimiter=self.sep)
                end = 0
                row_number = -1  # the header is row -1, the first data row 0
                for row in reader:
                    start, end = end + 1, reader.line_num
                    if not row:
                        continue
                    if row_number == position:
                        return f"line {start}"
                    row_number += 1
        except (OSError, csv.Error):
            pass
        return f"data row {position + 1}"


def _parse_labels(
    values: pd.Series, name: str, positive: object, where: str, locate: Callable[[int], str]
) -> tuple[np.ndarray, str]:
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{where}label column {name!r} has a missing value at "
            f"{locate(np.flatnonzero(missing)[0])}"
        )
    text = values.map(_label_text)
    found = sorted(text.unique().tolist())
    if positive is not None:
        want = _label_text(positive)
        if want not in found:
            # "1.0" on the command line names the label 1 of a numeric column.
            number = pd.to_numeric(pd.Series([want]), errors="coerce").iloc[0]
            if pd.notna(number) and _label_text(float(number)) in found:
                want = _label_text(float(number))
        if want not in found:
            raise DataError(
                f"{where}positive label {want!r} does not occur in column {name!r} "
                f"(values found: {_show_values(found)})"
            )
        return (text == want).to_numpy().astype(np.int8), want
    lowered = {f.lower() for f in found}
    if lowered <= {"0", "1"}:
        want = "1"
    elif lowered <= _TRUE_WORDS | _FALSE_WORDS and len(lowered & _TRUE_WORDS) <= 1:
        want = next((f for f in found if f.lower() in _TRUE_WORDS), "true")
    else:
        raise DataError(
            f"{where}cannot tell which value of label column {name!r} marks an anomaly "
            f"(values found: {_show_values(found)}); pass the anomaly value with --positive"
        )
    # Words match in any letter case: "Yes" and "yes" are the same label.
    return (text.str.lower() == want.lower()).to_numpy().astype(np.int8), want


def _label_text(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _show_values(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _type_column(
    series: pd.Series,
    name: str,
    force_categorical: bool,
    where: str,
    locate: Callable[[int], str],
):
    if series.isna().all():
        raise DataError(
            f"{where}column {name!r} has no values (all missing); leave it out with --exclude"
        )
    if force_categorical:
        return _as_category_text(series), CATEGORICAL
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64"), NUMERIC
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
        _reject_infinite(values, name, where, locate)
        return values, NUMERIC
    text = series.astype("string")
    parsed = pd.to_numeric(text.str.strip(), errors="coerce")
    present = text.notna() & (text.str.strip() != "")
    n_present = int(present.sum())
    bad = present & parsed.isna()
    if n_present and not bad.any():
        values = parsed.astype("float64")
        _reject_infinite(values, name, where, locate)
        return values, NUMERIC
    if n_present and (n_present - int(bad.sum())) / n_present >= _NUMERIC_SHARE:
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}column {name!r} is numeric but has the non-numeric value "
            f"{str(text.iloc[pos])!r} at {locate(pos)}"
        )
    return _as_category_text(series), CATEGORICAL


def _as_category_text(series: pd.Series) -> pd.Series:
    out = series.astype("object").where(series.notna(), None)
    return out.map(lambda v: None if v is None else _label_text(v)).astype("object")


def _reject_infinite(
    values: pd.Series, name: str, where: str, locate: Callable[[int], str]
) -> None:
    arr = values.to_numpy(dtype="float64", na_value=np.nan)
    inf = np.isinf(arr)
    if inf.any():
        pos = int(np.flatnonzero(inf)[0])
        raise DataError(
            f"{where}column {name!r} has an infinite value at {locate(pos)}; "
            "anomtune does not guess what it means: fix it or leave the cell empty"
        )
    with np.errstate(invalid="ignore"):
        huge = np.abs(arr) > _FLOAT32_MAX
    if huge.any():
        pos = int(np.flatnonzero(huge)[0])
        raise DataError(
            f"{where}column {name!r} has a value too large for float32 ({arr[pos]:.3g}) "
            f"at {locate(pos)}; models compute in float32, where it would be infinite"
        )


def fingerprint(features: pd.DataFrame, labels: np.ndarray | None = None) -> str:
    """SHA-256 of the table's content: column names, kinds, values and labels.

    Independent of the file's formatting (quoting, float spelling, line
    endings), so the same data read twice has the same fingerprint.
    """
    digest = hashlib.sha256()
    for name in features.columns:
        digest.update(f"{name}\x1f{features[name].dtype}\x1e".encode())
    hashed = pd.util.hash_pandas_object(features, index=False).to_numpy()
    digest.update(hashed.tobytes())
    if labels is not None:
        digest.update(np.asarray(labels, dtype=np.int8).tobytes())
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Split:
    """Row positions of the train, validation and test parts of a table."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    val_size: float = 0.2
    test_size: float = 0.2
    method: str = field(default="stratified train_test_split, test first")

    def describe(self) -> dict:
        return {
            "seed": self.seed,
            "method": self.method,
            "val_size": self.val_size,
            "test_size": self.test_size,
            "rows": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }


def _require_both_classes(labels: np.ndarray, what: str = "the label column") -> None:
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        only = "anomalies" if n_pos else "normal rows"
        raise DataError(
            f"{what} has only one class ({len(labels)} {only}); "
            "anomtune needs labeled anomalies and normal rows"
        )


def split_rows(
    labels: np.ndarray,
    *,
    seed: int = 0,
    val_size: float = 0.2,
    test_size: float = 0.2,
    what: str = "the label column",
) -> Split:
    """Stratified train/validation/test split.

    The test part is taken first with
    ``train_test_split(test_size=test_size, stratify=y, random_state=seed)``,
    then the rest is split again with the validation share of what remains.
    With the defaults this is exactly the benchmark protocol: seed ``s``
    gives the rows the reference baselines saw.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if not (0 < test_size < 1 and 0 < val_size < 1 and val_size + test_size < 1):
        raise DataError(
            f"val_size and test_size must be in (0, 1) and sum below 1 "
            f"(got {val_size} and {test_size})"
        )
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"the split seed must be an integer in [0, 2**32 - 1], not {seed!r}")
    _require_both_classes(labels, what)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    too_few = (
        f"too few rows to split: {n_pos} anomalies and {n_neg} normal rows; "
        "the validation and test parts each need anomalies and normal rows"
    )
    if min(n_pos, n_neg) < 3:
        raise DataError(too_few)
    positions = np.arange(len(labels))
    second = round(val_size / (1.0 - test_size), 12)
    try:
        rest, test = train_test_split(
            positions, test_size=test_size, stratify=labels, random_state=seed
        )
        train, val = train_test_split(
            rest, test_size=second, stratify=labels[rest], random_state=seed
        )
    except ValueError as exc:
        raise DataError(f"{too_few} ({_first_line(exc)})") from exc
    # Rounding can leave a small part with one class only; every metric and
    # the threshold would then be undefined, so say so here.
    for part, rows in (("validation", val), ("test", test)):
        n_part_pos = int(labels[rows].sum())
        if n_part_pos in (0, len(rows)):
            raise DataError(
                f"{too_few}; with seed {seed} the {part} part gets "
                f"{n_part_pos} anomalies out of {len(rows)} rows"
            )
    if int(labels[train].sum()) == len(train):
        raise DataError(f"{too_few}; with seed {seed} the training part has no normal rows")
    return Split(train=train, val=val, test=test, seed=seed, val_size=val_size, test_size=test_size)


def split_unlabeled(
    n_rows: int, *, seed: int = 0, val_size: float = 0.2, test_size: float = 0.2
) -> Split:
    """Random train/validation/test split of rows without labels (same two steps)."""
    from sklearn.model_selection import train_test_split

    if not (0 < test_size < 1 and 0 < val_size < 1 and val_size + test_size < 1):
        raise DataError(
            f"val_size and test_size must be in (0, 1) and sum below 1 "
            f"(got {val_size} and {test_size})"
        )
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"the split seed must be an integer in [0, 2**32 - 1], not {seed!r}")
    if n_rows < 10:
        raise DataError(f"too few rows to split: {n_rows}; anomtune needs at least 10")
    positions = np.arange(n_rows)
    rest, test = train_test_split(positions, test_size=test_size, random_state=seed)
    train, val = train_test_split(
        rest, test_size=round(val_size / (1.0 - test_size), 12), random_state=seed
    )
    return Split(
        train=train,
        val=val,
        test=test,
        seed=seed,
        val_size=val_size,
        test_size=test_size,
        method="random train_test_split, test first (no labels)",
    )


def training_rows(positions: np.ndarray, labels: np.ndarray | None, train_on: str = "normal"):
    """The rows of ``positions`` a detector is fitted on.

    ``"normal"`` keeps the rows labeled normal (the anomalies the user labeled
    are kept out of what the autoencoder learns to reconstruct); ``"all"``
    keeps every row, as in the unsupervised setting.
    """
    if train_on == "all" or labels is None:
        return positions
    if train_on != "normal":
        raise DataError(f"train_on must be 'normal' or 'all', not {train_on!r}")
    kept = positions[np.asarray(labels)[positions] == 0]
    if len(kept) == 0:
        raise DataError("no normal rows to train on")
    return kept


def stratified_folds(
    labels: np.ndarray, positions: np.ndarray, *, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold over ``positions``: a list of (fit rows, held-out rows)."""
    from sklearn.model_selection import StratifiedKFold

    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, not {k}")
    sub = np.asarray(labels)[positions]
    n_pos = int(sub.sum())
    if min(n_pos, len(sub) - n_pos) < k:
        raise DataError(
            f"cannot make {k} stratified folds from {n_pos} anomalies and "
            f"{len(sub) - n_pos} normal rows; use fewer folds"
        )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(positions[a], positions[b]) for a, b in folds.split(positions, sub)]
