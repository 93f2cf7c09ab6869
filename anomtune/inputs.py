"""Raw columns to model inputs: the one door every table goes through.

Tuning, the export check, ``anomtune score``, ``anomtune serve``,
``registry promote --data``, :func:`anomtune.load` and the report all turn
raw values into model inputs here, so the same rows give the same scores
whichever way they come in. Three steps:

1. Reading (:func:`read_source`): CSV files are sniffed for their separator,
   decimal mark and encoding (each can be given instead) and read as text;
   Parquet files and DataFrames keep their types.
2. Column roles (:func:`infer_roles`): each column is a numeric, boolean or
   categorical feature, or an id, a timestamp, a constant, an empty column,
   the label, or excluded, with the reason shown to the user. Every
   inference can be overridden.
3. Conversion (:class:`InputSpec`): one rule per kind of value turns a raw
   column into numbers (``NaN`` for missing) or category text, whatever the
   column's type was on the way in (text, numbers, booleans, JSON values).

The rules, in one place:

- numbers: surrounding spaces are ignored; with ``decimal=","`` a comma is
  the decimal mark; empty cells, ``NA``-style markers and ``NaN`` are
  missing; infinities and values beyond float32 are errors.
- booleans: ``true``/``false``, ``yes``/``no``, ``y``/``n``, ``t``/``f`` in
  any letter case, ``1``/``0`` and JSON ``true``/``false`` read as 1 and 0.
- categories: surrounding spaces are ignored; ``True``/``TRUE`` read as
  ``true`` (and likewise ``false``); numbers read as their shortest text
  (``1.0`` and ``"1"`` are the same category); missing is empty text.
- timestamps are never features by default; on request they give the
  numeric features hour of day (with minutes as a fraction), day of week
  (Monday = 0), day of month and month. Times with a UTC offset are taken in
  UTC; times without one as they are.

Serving path: imports numpy, pandas and pyarrow only.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import difflib
import io
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.errors import ConfigError, DataError, first_line

__all__ = [
    "FEATURE_ROLES",
    "MAX_LEVELS",
    "ROLES",
    "ColumnRole",
    "Dialect",
    "Feature",
    "InputSpec",
    "RawTable",
    "category_text",
    "infer_roles",
    "read_source",
    "sniff_dialect",
]

#: Every role a column can have.
ROLES = (
    "numeric",
    "boolean",
    "categorical",
    "timestamp",
    "id",
    "constant",
    "empty",
    "label",
    "excluded",
)
#: Roles a user can force with ``--role COLUMN=ROLE``.
FORCEABLE = ("numeric", "boolean", "categorical", "timestamp", "id", "excluded")
#: The roles that make model features.
FEATURE_ROLES = ("numeric", "boolean", "categorical")
#: A text column with more distinct values than this is left out (``--max-levels``).
MAX_LEVELS = 50
#: Parts of a timestamp that ``--time-features`` turns into numeric features.
TIME_PARTS = ("hour", "weekday", "day", "month")

TRUE_WORDS = frozenset({"true", "yes", "y", "t", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "f", "0"})
# A text column whose present values parse as numbers this often is a numeric
# column with junk in it (an error naming the junk), not a categorical one.
NUMERIC_SHARE = 0.9
# Ids are inferred only in tables of at least this many rows: in a handful of
# rows, distinct values and short runs prove nothing.
ID_MIN_ROWS = 10
# A text column whose present values parse as ISO dates this often is a timestamp.
TIMESTAMP_SHARE = 0.9
# Bytes read up front to check the header and sniff the dialect.
HEAD_BYTES = 65536
# At most this many columns: far beyond any real table, and it stops a header of
# a million empty names before it costs time or memory.
MAX_COLUMNS = 100_000
_MAX_HEADER_BYTES = 16 * 2**20
# Numbers beyond float32 cannot reach a model: training, the ONNX graph and
# scoring all compute in float32, where they would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)
SEPARATORS = (",", ";", "\t", "|")
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index|idx|row|rownum)$|[a-z]Id$|ID$", re.I)
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")
_DECIMAL_POINT = re.compile(r"^\s*[+-]?\d*\.\d+\s*$")
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
# Text that looks like a date or time at all (before pandas is asked to parse it).
_DATE_LIKE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")


# -- the dialect of a CSV file ------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How a CSV file is written: field separator, decimal mark and text encoding."""

    sep: str = ","
    decimal: str = "."
    encoding: str = "utf-8"

    def to_dict(self) -> dict:
        return {"sep": self.sep, "decimal": self.decimal, "encoding": self.encoding}

    def describe(self) -> str:
        sep = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}.get(self.sep, repr(self.sep))
        return f"separator {sep}, decimal mark {self.decimal!r}, encoding {self.encoding}"


def check_separator(sep: str) -> str:
    """``sep`` as one character (``\\t`` and ``tab`` name a tab)."""
    if sep in ("\\t", "tab"):
        return "\t"
    if not isinstance(sep, str) or len(sep) != 1:
        raise DataError(f"the CSV field separator must be one character, not {sep!r}")
    if sep in '"\r\n':
        raise DataError(f"{sep!r} cannot be the CSV field separator")
    return sep


def _check_decimal(decimal: str) -> str:
    if decimal not in (".", ","):
        raise ConfigError(f"--decimal must be '.' or ',', not {decimal!r}")
    return decimal


def _check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise ConfigError(
            f"unknown text encoding {encoding!r} (try utf-8, latin-1 or cp1252)"
        ) from exc


def _decode_head(head: bytes, complete: bool, encoding: str | None, where: str) -> tuple[str, str]:
    """The head of a file as text, and the encoding it was read with."""
    if head.startswith(codecs.BOM_UTF8):
        head, sniffed = head[3:], "utf-8"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        sniffed = "utf-16"
    else:
        sniffed = None
    candidates = [encoding] if encoding else ([sniffed] if sniffed else ["utf-8", "cp1252"])
    for name in candidates:
        # The first 64 KiB may end inside a multi-byte character; an incremental
        # decoder keeps such a tail pending instead of calling it invalid.
        decoder = codecs.getincrementaldecoder(name)(errors="strict")
        try:
            return decoder.decode(head, final=complete), codecs.lookup(name).name
        except UnicodeDecodeError:
            continue
    if encoding:
        raise DataError(
            f"{where}not a {encoding} text file; give its encoding with --encoding "
            "(for example latin-1 or cp1252)"
        )
    # Latin-1 decodes any byte: the last resort for files of unknown origin.
    return head.decode("latin-1"), "latin-1"


def _lines(text: str, complete: bool) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off by the read
    return lines[:200]


def _widths(lines: list[str], sep: str) -> list[int]:
    try:
        return [len(row) for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=sep)]
    except csv.Error:
        return []


def _sniff_separator(lines: list[str]) -> str | None:
    """The separator under which the header and the rows agree on the most columns."""
    best, best_key = None, (0.0, 1)
    for sep in SEPARATORS:
        widths = _widths(lines, sep)
        if not widths or widths[0] < 2:
            continue
        agree = sum(w == widths[0] for w in widths[1:]) / max(1, len(widths) - 1)
        key = (agree, widths[0])
        if agree >= 0.9 and key > best_key:
            best, best_key = sep, key
    return best


def _sniff_decimal(lines: list[str], sep: str) -> str:
    """``","`` when a column holds decimal-comma numbers and none holds decimal points."""
    if sep == ",":
        return "."
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:])), delimiter=sep))
    comma = point = False
    for row in rows:
        for value in row:
            if _DECIMAL_COMMA.match(value):
                comma = True
            elif _DECIMAL_POINT.match(value):
                point = True
    return "," if comma and not point else "."


def sniff_dialect(
    path: str | Path,
    *,
    sep: str | None = None,
    decimal: str | None = None,
    encoding: str | None = None,
) -> Dialect:
    """The dialect of a CSV file: what is given, the rest read off its first 64 KiB."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
        complete = not fh.read(1)
    return _dialect_of(head, complete, sep, decimal, encoding, f"{path}: ")


def _dialect_of(head, complete, sep, decimal, encoding, where) -> Dialect:
    if encoding is not None:
        encoding = _check_encoding(encoding)
    if decimal is not None:
        decimal = _check_decimal(decimal)
    if sep is not None:
        sep = check_separator(sep)
    text, used = _decode_head(head, complete, encoding, where)
    lines = _lines(text, complete)
    if sep is None:
        sep = _sniff_separator(lines) or ","
    if decimal is None:
        decimal = _sniff_decimal(lines, sep)
    if decimal == sep:
        raise ConfigError(
            f"the decimal mark and the field separator cannot both be {sep!r}; "
            "pass --sep ';' for a file with decimal commas"
        )
    return Dialect(sep=sep, decimal=decimal, encoding=used)


# -- reading ---------------------------------------------------------------------------


@dataclass
class RawTable:
    """A table's raw columns, where they came from and how to name a row in errors."""

    frame: pd.DataFrame
    source: str | None = None
    dialect: Dialect | None = None
    locate: Callable[[int], str] = field(default=lambda i: f"row {int(i) + 1}")

    @property
    def where(self) -> str:
        return f"{self.source}: " if self.source else ""


def row_locator(position: int) -> str:
    """Where a row of a DataFrame, request or Parquet file is: its 1-based row number."""
    return f"row {int(position) + 1}"


def read_source(path: str | Path, **dialect: str | None) -> RawTable:
    """Read a CSV (as text; ``dialect``, :func:`sniff_dialect`'s ``sep``,
    ``decimal`` and ``encoding``, sniffed unless given) or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    if is_parquet(str(path)):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataError(f"{path}: cannot read Parquet: {first_line(exc)}") from exc
        return from_frame(frame, source=str(path))
    return _read_csv(path, **dialect)


def release_text_memory() -> None:
    """Hand the memory of a table read as text back to the system.

    A CSV is read as Arrow text, whose buffers Arrow's allocator keeps after
    they are freed; nothing else can reuse them. Released once the table is
    built, a 600,000 x 10 CSV's tune peaks about 190 MB lower
    (``benchmarks/scale.py``).
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def is_parquet(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def from_frame(frame: pd.DataFrame, source: str | None = None) -> RawTable:
    """A DataFrame's columns as a raw table; rows are taken in order, the index unused."""
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        where = f"{source}: " if source else ""
        raise DataError(f"{where}duplicate column names: {', '.join(map(repr, dupes))}")
    return RawTable(frame, source=source, locate=row_locator)


def _read_csv(path: Path, sep=None, decimal=None, encoding=None) -> RawTable:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    where = f"{path}: "
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
            complete = not fh.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    if not head.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{path}: not a text CSV file (it contains NUL bytes)")
    dialect = _dialect_of(head, complete, sep, decimal, encoding, where)
    text, _ = _decode_head(head, complete, dialect.encoding, where)
    lines = [line for line in text.splitlines() if line.strip()]
    if complete and len(lines) == 1:
        raise DataError(f"{path}: the file has a header but no data rows")
    header_line = lines[0] if len(lines) > 1 or complete else _long_header(path, dialect)
    header = next(csv.reader(io.StringIO(header_line), delimiter=dialect.sep))
    if len(header) > MAX_COLUMNS:
        raise DataError(
            f"{path}: the header has {len(header):,} columns, more than anomtune reads "
            f"({MAX_COLUMNS:,})"
        )
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise DataError(f"{path}: duplicate column names: {', '.join(map(repr, dupes))}")
    _check_widths(path, lines, header, dialect, sep is not None, complete)
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                encoding=dialect.encoding, column_names=header, skip_rows=1
            ),
            parse_options=pacsv.ParseOptions(delimiter=dialect.sep, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowException as exc:
        line = _ragged_line(path, dialect, len(header))
        raise DataError(f"{path}: cannot parse CSV{line}: {first_line(exc)}") from exc
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    frame = table.to_pandas()
    return RawTable(frame, source=str(path), dialect=dialect, locate=CsvLines(path, dialect))


def _check_widths(path, lines, header, dialect, sep_given, complete) -> None:
    """Refuse a file whose rows and header disagree, naming the option to try."""
    widths = _widths(lines, dialect.sep)
    if len(widths) < 2:
        return
    bad = [i for i, w in enumerate(widths[1:], start=2) if w != len(header)]
    if not bad or (len(bad) == 1 and bad[0] == len(widths) and not complete):
        return
    other = _sniff_separator(lines)
    if other and other != dialect.sep:
        hint = f"; the file seems to use {other!r} as the separator (pass --sep {other!r})"
    else:
        hint = "; fix that row, or quote its fields if they hold the separator"
    n = len(header)
    raise DataError(
        f"{path}: the header has {n} column{'s' if n != 1 else ''} but the row at "
        f"line {_line_number(path, dialect, bad[0] - 1)} has {widths[bad[0] - 1]}{hint}"
    )


def _line_number(path: Path, dialect: Dialect, row_index: int) -> int:
    """The line an editor shows for the ``row_index``-th non-blank row (0 = header)."""
    try:
        with path.open(newline="", encoding=dialect.encoding, errors="replace") as fh:
            reader = csv.reader(fh, delimiter=dialect.sep)
            end, seen = 0, -1
            for row in reader:
                start, end = end + 1, reader.line_num
                if not row:
                    continue
                seen += 1
                if seen == row_index:
                    return start
    except (OSError, csv.Error):
        pass
    return row_index + 1


def _long_header(path: Path, dialect: Dialect) -> str:
    """The first line of a file whose header does not fit in the first read."""
    with path.open("rb") as fh:
        raw = fh.readline(_MAX_HEADER_BYTES + 1)
    if len(raw) > _MAX_HEADER_BYTES and not raw.endswith(b"\n"):
        # Count what was read: enough to say how wide the header is at least.
        n = raw.count(dialect.sep.encode()) + 1
        raise DataError(
            f"{path}: the header line is longer than {_MAX_HEADER_BYTES // 2**20} MiB "
            f"(at least {n:,} columns; anomtune reads at most {MAX_COLUMNS:,})"
        )
    try:
        return raw.decode(dialect.encoding).lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a {dialect.encoding} text file") from exc


def _ragged_line(path: Path, dialect: Dialect, width: int) -> str:
    """`` at line N`` for the first row whose field count differs from the header's."""
    try:
        with path.open(newline="", encoding=dialect.encoding, errors="replace") as fh:
            reader = csv.reader(fh, delimiter=dialect.sep)
            end = 0
            for row in reader:
                start, end = end + 1, reader.line_num
                if row and len(row) != width:
                    return f" at line {start}"
    except (OSError, csv.Error):
        pass
    return ""


class CsvLines:
    """Where a data row of a CSV file is: the line it starts on.

    The file is read again only when an error needs a line number, and only
    up to that row. Blank lines (which the CSV reader skips) and quoted
    fields spanning several lines are counted, so the number is the one an
    editor shows.
    """

    def __init__(self, path: Path, dialect: Dialect):
        self.path = path
        self.dialect = dialect

    def __call__(self, position: int) -> str:
        position = int(position)
        try:
            with self.path.open(newline="", encoding=self.dialect.encoding, errors="replace") as fh:
                reader = csv.reader(fh, delimiter=self.dialect.sep)
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

    def lines(self, positions: Sequence[int]) -> list[str]:
        return [self(p) for p in positions]


def missing_column(name: str, available: Sequence[str], what: str, source: str | None) -> DataError:
    """An error for a column that is not there, with the likeliest fix."""
    where = f"{source}: " if source else ""
    hint = ""
    names = [str(a) for a in available]
    same_but_case = [a for a in names if a.casefold() == str(name).casefold()]
    close = same_but_case[:1] or difflib.get_close_matches(name, names, n=1)
    # A header read as one column that contains a likely separator means the
    # file uses another separator; that explains the error better than a
    # near-miss name (which would be the whole header line).
    other = [s for s in SEPARATORS if len(available) == 1 and s in str(available[0])]
    if other:
        hint = f"; the file seems to use {other[0]!r} as the separator (pass --sep {other[0]!r})"
    elif close:
        hint = f"; did you mean {close[0]!r}?"
    shown = ", ".join(repr(str(a)) for a in list(available)[:12])
    more = f" and {len(available) - 12} more" if len(available) > 12 else ""
    return DataError(f"{where}{what} {name!r} not found (columns: {shown}{more}){hint}")


# -- value conversion: the rules, once ---------------------------------------------------


def _present(values: pd.Series) -> np.ndarray:
    """True where a raw value is there (not missing, not blank text)."""
    mask = values.notna().to_numpy(dtype=bool, copy=True)
    if _is_text(values):
        mask &= (values.str.strip() != "").fillna(False).to_numpy(dtype=bool)
    elif values.dtype == object:
        mask &= np.fromiter(
            (not (isinstance(v, str) and not v.strip()) for v in values), bool, len(values)
        )
    return mask


def _is_text(values: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(values) and values.dtype != object


def _as_series(values) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if hasattr(values, "to_pandas"):  # an Arrow array
        return values.to_pandas()
    if isinstance(values, np.ndarray):
        return pd.Series(values)
    return pd.Series(list(values), dtype=object)


class _Located:
    """Errors of one column, naming its row the way its source does."""

    def __init__(self, name: str, locate: Callable[[int], str], where: str = "", offset: int = 0):
        self.name, self.locate, self.where, self.offset = name, locate, where, offset

    def at(self, pos: int) -> str:
        return self.locate(self.offset + int(pos))

    def error(self, message: str) -> DataError:
        return DataError(f"{self.where}{message}")

    def check_finite(self, values: np.ndarray) -> np.ndarray:
        inf = np.isinf(values)
        if inf.any():
            pos = int(np.flatnonzero(inf)[0])
            raise self.error(
                f"column {self.name!r} has an infinite value at {self.at(pos)}; "
                "anomtune does not guess what it means: fix it or leave the cell empty"
            )
        with np.errstate(invalid="ignore"):
            huge = np.abs(values) > FLOAT32_MAX
        if huge.any():
            pos = int(np.flatnonzero(huge)[0])
            raise self.error(
                f"column {self.name!r} has a value too large for float32 ({values[pos]:.3g}) "
                f"at {self.at(pos)}; models compute in float32, where it would be infinite"
            )
        return values


def _text_numbers(text: pd.Series, decimal: str) -> tuple[np.ndarray, np.ndarray]:
    """Text parsed as numbers: the values (NaN where missing or not a number) and
    a mask of the present values that are not numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(text.astype("str"), from_pandas=True, type=pa.string())
    trimmed = pc.utf8_trim_whitespace(array)
    if decimal == ",":
        trimmed = pc.replace_substring(trimmed, ",", ".")
    blank = pc.equal(trimmed, "")
    trimmed = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    try:
        # Arrow's parser is several times faster than pandas' (benchmarks/messy.py).
        numbers = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(numbers, dtype=np.float64), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        pass
    parsed = pd.to_numeric(pd.Series(trimmed.to_pandas(), dtype=object), errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & ~np.asarray(pc.is_null(trimmed).to_numpy(zero_copy_only=False))
    # "nan" and friends are missing values, not junk.
    lowered = pc.utf8_lower(trimmed).to_numpy(zero_copy_only=False)
    bad &= ~np.isin(lowered.astype(object), ["nan", "-nan", "+nan"])
    return values, bad


def _python_number(value, decimal: str) -> float | None:
    """One JSON or Python value as a number; None when it is not one."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float64: too large, not infinite
            return sys.float_info.max if value > 0 else -sys.float_info.max
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan
        if decimal == ",":
            text = text.replace(",", ".")
        try:
            return float(text)
        except ValueError:
            return None
    return None


def to_numbers(values, *, decimal: str = ".", column: _Located) -> np.ndarray:
    """A raw column as float64 numbers, NaN for missing; raises naming a bad value."""
    series = _as_series(values)
    if pd.api.types.is_bool_dtype(series):
        out = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_numeric_dtype(series):
        with np.errstate(over="ignore"):
            out = series.to_numpy(dtype=np.float64, na_value=np.nan)
    elif _is_text(series):
        out, bad = _text_numbers(series, decimal)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise column.error(
                f"column {column.name!r} is numeric but has the non-numeric value "
                f"{str(series.iloc[pos])!r} at {column.at(pos)}"
            )
    elif pd.api.types.is_datetime64_any_dtype(series):
        raise column.error(f"column {column.name!r} is numeric but holds dates")
    else:
        out = np.empty(len(series), dtype=np.float64)
        for i, value in enumerate(series):
            number = _python_number(value, decimal)
            if number is None:
                raise column.error(
                    f"column {column.name!r} is numeric but has the non-numeric value "
                    f"{_show(value)} at {column.at(i)}"
                )
            out[i] = number
    return column.check_finite(out)


def to_booleans(values, *, column: _Located) -> np.ndarray:
    """A raw column of yes/no values as 1.0/0.0, NaN for missing."""
    series = _as_series(values)
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series):
        out = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(out) & (out != 0) & (out != 1)
    else:
        words = series.astype(object).map(_bool_word)
        out = words.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = (words.isna().to_numpy() & _present(series)) if len(series) else np.zeros(0, bool)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise column.error(
            f"column {column.name!r} is boolean but has the value {_show(series.iloc[pos])} at "
            f"{column.at(pos)} (booleans are true/false, yes/no, 1/0); "
            f"treat it as text with --role {column.name}=categorical"
        )
    return out


def _bool_word(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) if value in (0, 1) else None
    text = str(value).strip().casefold()
    if text in TRUE_WORDS or text == "1.0":
        return 1.0
    if text in FALSE_WORDS or text == "0.0":
        return 0.0
    return None


def category_text(value) -> str:
    """The text a categorical value is known by; ``""`` for a missing value.

    Spaces around text are ignored, ``True``/``TRUE`` read as ``true``,
    ``False``/``FALSE`` as ``false``, and numbers (or text that is a number)
    as their shortest text, so ``1``, ``1.0`` and ``"1"`` are one category.
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    lowered = text.casefold()
    if lowered in ("true", "false"):
        return lowered
    if _INTEGER.match(text) or _DECIMAL_POINT.match(text) or re.match(r"^[+-]?\d+\.\d*$", text):
        try:
            number = float(text)
        except ValueError:
            return text
        if math.isfinite(number):
            return category_text(number)
    return text


def to_categories(values, *, column: _Located | None = None) -> np.ndarray:
    """A raw column as category text (object array; ``""`` for missing).

    A list or an object (from JSON) is refused, naming ``column`` and its row.
    """
    series = _as_series(values)
    if column is not None and series.dtype == object:
        for i, value in enumerate(series):
            if isinstance(value, (list, dict, tuple)):
                raise column.error(
                    f"column {column.name!r} holds {_show(value)} at {column.at(i)}; "
                    "categorical values are strings, numbers or booleans"
                )
    if _is_text(series):
        out = series.str.strip()
        lowered = out.str.casefold()
        out = out.where(~lowered.isin(["true", "false"]), lowered)
        numeric = out.str.match(r"^[+-]?(\d+\.?\d*|\d*\.\d+)$").fillna(False).to_numpy(bool)
        out = out.fillna("").to_numpy(dtype=object)
        if numeric.any():
            out[numeric] = [category_text(v) for v in out[numeric]]
        return out
    if pd.api.types.is_bool_dtype(series) and not series.isna().any():
        return np.where(series.to_numpy(dtype=bool), "true", "false").astype(object)
    if pd.api.types.is_integer_dtype(series) and not series.isna().any():
        return series.astype("int64").astype(str).to_numpy(dtype=object)
    return np.fromiter(
        (category_text(None if _missing_scalar(v) else v) for v in series),
        dtype=object,
        count=len(series),
    )


def _missing_scalar(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT


def to_timestamps(values, *, column: _Located) -> pd.Series:
    """A raw column of dates and times as pandas timestamps (NaT for missing)."""
    series = _as_series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = series
    else:
        text = series.astype(object).where(_present(series), None)
        try:
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        except (ValueError, TypeError):
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        bad = parsed.isna().to_numpy() & _present(series)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise column.error(
                f"column {column.name!r} holds timestamps but {_show(series.iloc[pos])} at "
                f"{column.at(pos)} is not an ISO date or time"
            )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


def time_part(stamps: pd.Series, part: str) -> np.ndarray:
    """One numeric part of timestamps (see :data:`TIME_PARTS`), NaN where missing."""
    dt = stamps.dt
    if part == "hour":
        values = dt.hour + dt.minute / 60.0
    elif part == "weekday":
        values = dt.day_of_week
    elif part == "day":
        values = dt.day
    else:
        values = dt.month
    return values.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _show(value) -> str:
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- column roles ------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRole:
    """One column of a table: its role, why, and what it holds."""

    name: str
    role: str
    reason: str
    missing: float = 0.0
    levels: int = 0

    @property
    def is_feature(self) -> bool:
        return self.role in FEATURE_ROLES or self.reason.startswith("time features")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "reason": self.reason,
            "missing": round(self.missing, 6),
            "levels": self.levels,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ColumnRole:
        return cls(
            data["name"],
            data["role"],
            data.get("reason", ""),
            data.get("missing", 0.0),
            data.get("levels", 0),
        )


@dataclass(frozen=True)
class _Profile:
    present: np.ndarray
    levels: int
    numbers: np.ndarray | None  # all present values parsed, or None
    number_share: float
    first_bad: int | None  # position of the first present non-number
    boolean: bool
    timestamp: bool


def _profile(series: pd.Series, decimal: str) -> _Profile:
    present = _present(series)
    n_present = int(present.sum())
    if pd.api.types.is_datetime64_any_dtype(series):
        kept = series[present]
        return _Profile(present, int(kept.nunique()), None, 0.0, None, False, n_present > 0)
    if pd.api.types.is_bool_dtype(series):
        numbers = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return _Profile(present, len(set(numbers[present])), numbers, 1.0, None, True, False)
    if pd.api.types.is_numeric_dtype(series):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        levels = len(np.unique(numbers[present]))
        is_bool = levels <= 2 and bool(np.isin(numbers[present], (0.0, 1.0)).all())
        return _Profile(present, levels, numbers, 1.0, None, is_bool and levels > 0, False)
    text = series.astype(object).where(present, None)
    cats = to_categories(text)
    levels = len(set(cats[present]))
    if _is_text(series):
        numbers, bad = _text_numbers(series, decimal)
    else:
        numbers = np.array(
            [_python_number(v, decimal) if v is not None else math.nan for v in text],
            dtype=object,
        )
        bad = np.array([v is None for v in numbers], dtype=bool) & present
        numbers = np.where(bad, np.nan, numbers).astype(np.float64)
    n_bad = int(bad.sum())
    share = (n_present - n_bad) / n_present if n_present else 0.0
    first_bad = int(np.flatnonzero(bad)[0]) if n_bad else None
    words = {str(c).casefold() for c in cats[present]}
    is_bool = bool(words) and words <= (TRUE_WORDS | FALSE_WORDS) and len(words) <= 2
    if is_bool and words <= {"0", "1"}:
        is_bool = True
    stamp = False
    if n_present and n_bad:
        sample = text[present].head(200)
        looks = sum(bool(_DATE_LIKE.match(str(v))) for v in sample) / max(1, len(sample))
        if looks >= TIMESTAMP_SHARE:
            parsed = pd.to_datetime(text[present], format="ISO8601", errors="coerce", utc=True)
            stamp = float(parsed.notna().mean()) >= TIMESTAMP_SHARE
    return _Profile(
        present, levels, numbers if not n_bad else None, share, first_bad, is_bool, stamp
    )


def _integer_sequence(numbers: np.ndarray) -> bool:
    diffs = np.diff(numbers)
    return bool(len(numbers) > 1 and (diffs == 1).all())


def _describe_levels(n: int) -> str:
    return f"{n:,} value{'s' if n != 1 else ''}"


def _natural_role(
    name: str, series: pd.Series, profile: _Profile, n_rows: int, max_levels: int, column
) -> tuple[str, str]:
    """The role a practitioner would give a column, and the reason to show."""
    n_present = int(profile.present.sum())
    if n_present == 0:
        return "empty", "all missing"
    if profile.levels == 1:
        value = series[profile.present].iloc[0]
        return "constant", f"one value ({_show(category_text(value))})"
    if profile.timestamp:
        return "timestamp", "dates or times (ISO 8601)"
    unique = profile.levels == n_present == n_rows
    if profile.numbers is not None:
        numbers = profile.numbers[profile.present]
        integral = bool(np.isfinite(numbers).all() and np.all(np.mod(numbers, 1) == 0))
        if profile.boolean:
            return "boolean", "two values (0/1 or yes/no)"
        if integral and unique and n_rows >= ID_MIN_ROWS:
            if _integer_sequence(numbers):
                return (
                    "id",
                    f"{int(numbers[0])}, {int(numbers[1])}, {int(numbers[2])}, ... in order",
                )
            if _ID_NAME.search(name):
                return "id", "unique integers, named like an id"
        return "numeric", "numbers"
    if profile.boolean:
        return "boolean", "two values (yes/no words)"
    if profile.number_share >= NUMERIC_SHARE:
        pos = profile.first_bad
        raise column.error(
            f"column {name!r} is numeric but has the non-numeric value "
            f"{str(series.iloc[pos])!r} at {column.at(pos)}; fix it, leave the cell empty, "
            f"or treat the column as text with --role {name}=categorical"
        )
    if unique and n_rows >= ID_MIN_ROWS:
        return "id", "text, unique per row"
    if profile.levels > max_levels:
        return "excluded", f"{_describe_levels(profile.levels)}, cap {max_levels}"
    return "categorical", _describe_levels(profile.levels)


def parse_role_overrides(items: Iterable[str]) -> dict[str, str]:
    """``COLUMN=ROLE`` pairs as a dict, checked."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, role = str(item).rpartition("=")
        role = role.strip().lower()
        if not sep or not name.strip():
            raise ConfigError(f"--role takes COLUMN=ROLE, not {item!r}")
        if role not in FORCEABLE:
            raise ConfigError(
                f"--role {name}: {role!r} is not a role (choose from {', '.join(FORCEABLE)})"
            )
        out[name.strip()] = role
    return out


def infer_roles(
    raw: RawTable,
    *,
    label: str | None = None,
    id_column: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    include: Iterable[str] = (),
    categorical: Iterable[str] = (),
    roles: Mapping[str, str] | None = None,
    max_levels: int = MAX_LEVELS,
    time_features: bool = False,
) -> list[ColumnRole]:
    """The role of every column of ``raw``, inferred unless given.

    ``features`` lists the only feature columns; ``exclude`` leaves columns
    out; ``include`` keeps a column as a feature that inference would leave
    out (an id, a timestamp, a wide text column); ``categorical`` and
    ``roles`` force a role. Unique-per-row text and integer sequences
    (1, 2, 3, ...) are ids; dates are timestamps (features with
    ``time_features``); text with more than ``max_levels`` values, constant
    and all-missing columns are left out.
    """
    frame = raw.frame
    columns = list(frame.columns)
    source = raw.source
    roles = dict(roles or {})
    if max_levels < 1:
        raise ConfigError(f"--max-levels must be at least 1, not {max_levels}")
    exclude, include = list(exclude), list(include)
    categorical = list(categorical)
    named = [
        (label, "label column"),
        (id_column, "id column"),
        *((n, "categorical column") for n in categorical),
        *((n, "excluded column") for n in exclude),
        *((n, "included column") for n in include),
        *((n, "column given with --role") for n in roles),
    ]
    for name, what in named:
        if name is not None and name not in columns:
            raise missing_column(name, columns, what, source)
    for name in categorical:
        roles.setdefault(name, "categorical")
    if id_column is not None:
        roles[id_column] = "id"
    chosen = None
    if features is not None:
        chosen = list(features)
        twice = sorted({c for c in chosen if chosen.count(c) > 1})
        if twice:
            raise DataError(
                f"{raw.where}feature column(s) listed twice: {', '.join(map(repr, twice))}"
            )
        for name in chosen:
            if name not in columns:
                raise missing_column(name, columns, "feature column", source)
            if name == label or roles.get(name) == "id":
                raise DataError(
                    f"{raw.where}column {name!r} cannot be both a feature and the label/id"
                )
    out = []
    decimal = raw.dialect.decimal if raw.dialect else "."
    n_rows = len(frame)
    for name in columns:
        series = frame[name]
        missing = 1.0 - float(_present(series).mean()) if n_rows else 0.0
        if name == label:
            out.append(ColumnRole(name, "label", "given with --label", missing))
            continue
        column = _Located(name, raw.locate, raw.where)
        forced = roles.get(name)
        if name in exclude:
            out.append(ColumnRole(name, "excluded", "given with --exclude", missing))
            continue
        if chosen is not None and name not in chosen and forced != "id":
            out.append(ColumnRole(name, "excluded", "not in --features", missing))
            continue
        if forced is not None:
            levels = len(set(to_categories(series[_present(series)])))
            reason = "given with --id-column" if name == id_column else "given with --role"
            if forced == "categorical" and name in categorical:
                reason = "given with --categorical"
            out.append(ColumnRole(name, forced, reason, missing, levels))
            continue
        profile = _profile(series, decimal)
        role, reason = _natural_role(name, series, profile, n_rows, max_levels, column)
        if name in include or (chosen is not None and role not in FEATURE_ROLES):
            if role not in FEATURE_ROLES and role != "timestamp":
                note = reason
                role = "numeric" if profile.numbers is not None else "categorical"
                reason = f"given with --{'include' if name in include else 'features'} ({note})"
            elif role == "timestamp":
                time_features = True
        out.append(ColumnRole(name, role, reason, missing, profile.levels))
    if time_features:
        out = [
            ColumnRole(
                r.name, r.role, f"time features: {', '.join(TIME_PARTS)}", r.missing, r.levels
            )
            if r.role == "timestamp"
            else r
            for r in out
        ]
    ids = [r for r in out if r.role == "id"]
    if len(ids) > 1:
        # One id is kept for output, the others are only left out: the given one,
        # else text ids first (an order number says more than a row number).
        keep = (
            id_column
            or min(ids, key=lambda r: (not r.reason.startswith("text"), out.index(r))).name
        )
        out = [
            ColumnRole(
                r.name,
                "excluded",
                f"id-like ({r.reason}); {keep!r} is the output id",
                r.missing,
                r.levels,
            )
            if r.role == "id" and r.name != keep
            else r
            for r in out
        ]
    if chosen is not None:
        order = {name: i for i, name in enumerate(chosen)}
        out.sort(key=lambda r: order.get(r.name, len(order) + columns.index(r.name)))
    return out


# -- the input specification of a model ---------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One model feature: its name, what the encoder sees, and how it is computed."""

    name: str
    kind: str  # "numeric" or "categorical": what the encoder sees
    source: str  # the raw column it comes from
    convert: str  # "number", "boolean", "category" or a time part

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Feature:
        return cls(data["name"], data["kind"], data["source"], data["convert"])


@dataclass(frozen=True)
class InputSpec:
    """How a model's raw columns become its inputs; stored with the model.

    ``features`` are the model's features in schema order; ``roles`` the
    roles table of the training data (every column, shown to users);
    ``id_column`` the column scores are reported against.
    """

    features: tuple[Feature, ...]
    roles: tuple[ColumnRole, ...] = ()
    id_column: str | None = None
    decimal: str = "."
    format: str = "anomtune-inputs/1"

    @classmethod
    def from_roles(cls, roles: Sequence[ColumnRole], decimal: str = ".") -> InputSpec:
        features = []
        id_column = None
        for r in roles:
            if r.role == "numeric":
                features.append(Feature(r.name, "numeric", r.name, "number"))
            elif r.role == "boolean":
                features.append(Feature(r.name, "numeric", r.name, "boolean"))
            elif r.role == "categorical":
                features.append(Feature(r.name, "categorical", r.name, "category"))
            elif r.role == "timestamp" and r.is_feature:
                features.extend(
                    Feature(f"{r.name}.{part}", "numeric", r.name, part) for part in TIME_PARTS
                )
            elif r.role == "id" and id_column is None:
                id_column = r.name
        return cls(tuple(features), tuple(roles), id_column, decimal)

    @classmethod
    def plain(cls, numeric: Sequence[str], categorical: Sequence[str], names: Sequence[str]):
        """The spec of a model that predates stored specs: every column as it is."""
        cats = set(categorical)
        return cls(
            tuple(
                Feature(n, "categorical", n, "category")
                if n in cats
                else Feature(n, "numeric", n, "number")
                for n in names
            )
        )

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def sources(self) -> list[str]:
        """The raw columns the model reads, in order, each once."""
        return list(dict.fromkeys(f.source for f in self.features))

    def with_decimal(self, decimal: str) -> InputSpec:
        return InputSpec(self.features, self.roles, self.id_column, decimal, self.format)

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "features": [f.to_dict() for f in self.features],
            "roles": [r.to_dict() for r in self.roles],
            "id_column": self.id_column,
            "decimal": self.decimal,
        }

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(
            tuple(Feature.from_dict(f) for f in data["features"]),
            tuple(ColumnRole.from_dict(r) for r in data.get("roles", [])),
            data.get("id_column"),
            data.get("decimal", "."),
            data.get("format", "anomtune-inputs/1"),
        )

    def check_columns(self, present: Iterable[str], where: str = "") -> None:
        """Raise naming the first raw column the model needs that ``present`` lacks."""
        have = [str(c) for c in present]
        missing = [c for c in self.sources if c not in set(have)]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            unused = [c for c in have if c not in set(self.sources)]
            close = difflib.get_close_matches(missing[0], unused, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{where}missing feature column {missing[0]!r}{more}{hint}")

    def columns(
        self,
        data: Mapping[str, object] | pd.DataFrame,
        *,
        locate: Callable[[int], str] = row_locator,
        where: str = "",
        offset: int = 0,
        decimal: str | None = None,
        skip: set[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Each feature's values: float64 for numeric ones, text for categorical ones
        (the features named in ``skip`` left out)."""
        keys = data.columns if isinstance(data, pd.DataFrame) else data.keys()
        self.check_columns(keys, where)
        decimal = decimal or self.decimal
        out: dict[str, np.ndarray] = {}
        stamps: dict[str, pd.Series] = {}
        for f in self.features:
            if skip and f.name in skip:
                continue
            column = _Located(f.source, locate, where, offset)
            values = data[f.source]
            if f.convert == "number":
                out[f.name] = to_numbers(values, decimal=decimal, column=column)
            elif f.convert == "boolean":
                out[f.name] = to_booleans(values, column=column)
            elif f.convert == "category":
                out[f.name] = to_categories(values, column=column)
            else:
                if f.source not in stamps:
                    stamps[f.source] = to_timestamps(values, column=column)
                out[f.name] = time_part(stamps[f.source], f.convert)
        return out

    def frame(self, data, **kwargs) -> pd.DataFrame:
        """The features as a DataFrame: float64 columns and text columns (None for missing)."""
        cols = self.columns(data, **kwargs)
        n = _length(data)
        frame = {}
        for f in self.features:
            values = cols[f.name]
            if f.kind == "categorical":
                values = pd.Series(values, dtype=object).where(values != "", None)
            frame[f.name] = values
        return pd.DataFrame(frame, index=pd.RangeIndex(n))

    def feeds(self, data, **kwargs) -> dict[str, np.ndarray]:
        """The model graph's inputs: ``numeric`` float32 (NaN for missing) and
        ``categorical`` text (``""`` for missing), each in schema order."""
        block = self._number_block(data)
        if block is None:
            return feeds_of(
                self.columns(data, **kwargs),
                self.numeric,
                self.categorical,
                len(data) if isinstance(data, pd.DataFrame) else _length(data),
            )
        feeds = {"numeric": block}
        if self.categorical:
            cols = self.columns(data, skip=set(self.numeric), **kwargs)
            feeds["categorical"] = feeds_of(cols, [], self.categorical, len(data))["categorical"]
        return feeds

    def _number_block(self, data) -> np.ndarray | None:
        """The numeric features of a DataFrame whose numeric columns are already
        numbers, as one float32 block; None when any needs converting or checking
        value by value (text, booleans, time parts, an infinite or too large value,
        which the column-by-column path then names).

        Hand-written because converting a 100-column frame one column at a time
        costs about 60 µs a column (6 ms for 4,096 rows, where the model takes
        1.5 ms: ``benchmarks/scoring.py``'s ``scorer`` column); one block read
        costs a fraction of that.
        """
        if not isinstance(data, pd.DataFrame) or not self.numeric:
            return None
        numeric = [f for f in self.features if f.kind == "numeric"]
        if any(f.convert != "number" for f in numeric):
            return None
        sources = [f.source for f in numeric]
        if data.columns.has_duplicates:
            return None
        try:
            block = data[sources]
        except KeyError:
            return None
        # Numbers only (kind i, u or f; a bool column's kind is b).
        if not all(getattr(t, "kind", "O") in "iuf" for t in block.dtypes):
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            # A value beyond float32 becomes infinite here, like an infinite one.
            values = block.to_numpy(dtype=np.float32, na_value=np.nan, copy=True)
        return None if np.isinf(values).any() else values


def _length(data) -> int:
    if isinstance(data, pd.DataFrame):
        return len(data)
    for values in data.values():
        return len(values)
    return 0


def feeds_of(
    columns: Mapping[str, np.ndarray], numeric: Sequence[str], categorical: Sequence[str], n: int
) -> dict[str, np.ndarray]:
    """Graph inputs from converted feature values (see :meth:`InputSpec.columns`)."""
    block = np.empty((n, len(numeric)), dtype=np.float32)
    for j, name in enumerate(numeric):
        with np.errstate(over="ignore"):
            block[:, j] = columns[name]
    feeds = {"numeric": block}
    if categorical:
        cats = np.empty((n, len(categorical)), dtype=object)
        for j, name in enumerate(categorical):
            cats[:, j] = columns[name]
        feeds["categorical"] = cats.astype(str)
    return feeds


def features_feeds(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]):
    """Graph inputs from a frame that holds the model's features by name (converted
    features of a :class:`~anomtune.data.Table`, or a user's matrix in schema order):
    numbers and categories under the same rules as raw columns."""
    names = [*numeric, *categorical]
    return InputSpec.plain(numeric, categorical, names).feeds(frame)
