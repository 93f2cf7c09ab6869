"""Labeled tables: the label, the features, the split.

A :class:`Table` is what every other part of anomtune starts from: the
feature columns as a DataFrame, the 0/1 labels (1 = anomaly), an optional id
column kept for output, a :class:`Schema` and a content fingerprint. Raw
columns become features through :mod:`anomtune.inputs`, the one door every
path takes: the roles of the columns (and why) travel with the table.

Infinite values are rejected with an error naming the column and line:
they are almost always a bug upstream (a division by zero), and silently
treating them as missing would hide it. So are numbers beyond float32, which
every model computes in. Missing values (empty cells, ``NA``) are allowed in
feature columns and are imputed with the training median.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune import inputs
from anomtune.errors import ConfigError, DataError, first_line
from anomtune.inputs import (
    MAX_LEVELS,
    ColumnRole,
    Dialect,
    InputSpec,
    RawTable,
    category_text,
    missing_column,
)

__all__ = [
    "Column",
    "ReadOptions",
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
MAX_COLUMNS = inputs.MAX_COLUMNS
# The category text of a value; the encoder looks categories up by it.
_label_text = category_text
# Line numbers shown in the error for unlabeled rows.
_SHOWN_LINES = 5


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
    """Ordered feature columns plus the label and id columns they came with.

    ``inputs`` says how the raw columns become these features (see
    :class:`anomtune.inputs.InputSpec`); it is stored with every model.
    """

    columns: tuple[Column, ...]
    label: str | None = None
    positive: str | None = None
    id_column: str | None = None
    inputs: InputSpec | None = None

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == NUMERIC]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == CATEGORICAL]

    def input_spec(self) -> InputSpec:
        """How raw columns become this schema's features (each column as it is, for
        schemas stored before input specifications were)."""
        if self.inputs is not None:
            return self.inputs
        return InputSpec.plain(self.numeric, self.categorical, self.feature_names)

    def with_columns(self, columns: Sequence[Column]) -> Schema:
        return Schema(tuple(columns), self.label, self.positive, self.id_column, self.inputs)

    def to_dict(self) -> dict:
        out = {
            "columns": [c.to_dict() for c in self.columns],
            "label": self.label,
            "positive": self.positive,
            "id_column": self.id_column,
        }
        if self.inputs is not None:
            out["inputs"] = self.inputs.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        spec = data.get("inputs")
        return cls(
            tuple(Column.from_dict(c) for c in data["columns"]),
            data.get("label"),
            data.get("positive"),
            data.get("id_column"),
            InputSpec.from_dict(spec) if spec else None,
        )


@dataclass
class Table:
    """Features, labels and ids of one data set, with schema and fingerprint.

    ``roles`` is the roles table of every column read (shown before tuning
    and stored with the run and the model); ``notes`` says in a line each
    what was inferred or dropped.
    """

    features: pd.DataFrame
    labels: np.ndarray | None
    schema: Schema
    fingerprint: str
    ids: pd.Series | None = None
    source: str | None = None
    roles: list[ColumnRole] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dialect: Dialect | None = None
    counts: dict = field(default_factory=dict)

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
            "id_column": self.schema.id_column,
            "fingerprint": self.fingerprint,
        }
        if self.dialect is not None:
            out["dialect"] = self.dialect.to_dict()
        out.update(self.counts)
        if self.labels is not None:
            out["anomalies"] = self.n_anomalies
            out["anomaly_rate"] = round(self.n_anomalies / max(self.n_rows, 1), 6)
        return out


@dataclass(kw_only=True)
class ReadOptions:
    """How a labeled file or frame is read into a :class:`Table`: the options of
    :func:`read_table`, of every command that reads data, and the part of a
    tuning run's config (:class:`~anomtune.tuning.TuneConfig`) that says how
    its data is read.

    Attributes
    ----------
    label : str, optional
        The label column. Without it the table has no labels.
    positive : optional
        The label value that marks an anomaly. Needed only when the label's
        values are not 0/1 or true/false.
    features : list of str, optional
        Feature columns to use, in this order. Default: the columns whose
        inferred role is a feature (see :func:`anomtune.inputs.infer_roles`).
    exclude, include : list of str
        Columns to leave out; columns to keep as features that inference
        would leave out.
    id_column : str, optional
        A column kept for output (scores are reported against it) but never
        used as a feature. Default: the first column inferred to be an id.
    categorical : list of str
        Columns to treat as categorical even if their values look numeric.
    roles : dict of str to str
        Roles to force, by column (``numeric``, ``boolean``, ``categorical``,
        ``timestamp``, ``id``, ``excluded``).
    max_levels : int
        Text columns with more distinct values are left out.
    time_features : bool
        Turn timestamp columns into hour, weekday, day and month features.
    drop_unlabeled : bool
        Drop rows without a label (counted) instead of refusing them.
    dedupe : bool
        Drop rows whose features and label repeat an earlier row's, before the split.
    sep, decimal, encoding : str, optional
        The CSV field separator (``"\\t"`` or ``"tab"`` mean a tab), decimal
        mark and text encoding; each is sniffed from the file when not given.
    """

    label: str | None = None
    positive: object = None
    features: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    id_column: str | None = None
    categorical: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    max_levels: int = MAX_LEVELS
    time_features: bool = False
    drop_unlabeled: bool = False
    dedupe: bool = False
    sep: str | None = None
    decimal: str | None = None
    encoding: str | None = None

    def __post_init__(self):
        # Any iterable is accepted; lists are what a config records.
        if self.features is not None:
            self.features = list(self.features)
        self.exclude = list(self.exclude)
        self.categorical = list(self.categorical)
        self.include = list(self.include)
        self.roles = dict(self.roles or {})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(ReadOptions))

    @classmethod
    def of(cls, options: Mapping) -> ReadOptions:
        """The reading options among ``options`` (a config or a run summary's
        ``config``); keys it lacks keep their defaults, so a run recorded before
        an option existed reads as it did then."""
        return cls(**{k: options[k] for k in cls.names() if options.get(k) is not None})

    def reading(self) -> ReadOptions:
        """Just these options (of a subclass such as a tuning config)."""
        return ReadOptions.of(vars(self))


def read_table(path: str | Path, options: ReadOptions | None = None, /, **kwargs) -> Table:
    """Read a labeled CSV (or Parquet) file into a :class:`Table`.

    ``path``: the file; ``.parquet`` files are read as Parquet, anything else
    as CSV. The options (a :class:`ReadOptions`, or its attributes as keyword
    arguments) say how: the label, which columns are features, the CSV dialect.
    """
    options = _options(options, kwargs)
    raw = inputs.read_source(
        path, sep=options.sep, decimal=options.decimal, encoding=options.encoding
    )
    try:
        return _build_table(raw, options)
    finally:
        del raw
        inputs.release_text_memory()


def table_from_frame(
    frame: pd.DataFrame, options: ReadOptions | None = None, /, *, source=None, **kwargs
) -> Table:
    """Build a :class:`Table` from a DataFrame; options as in :func:`read_table`
    (the CSV dialect has no say). Rows are taken in order; the index is not used."""
    return _build_table(inputs.from_frame(frame, source=source), _options(options, kwargs))


def _options(options: ReadOptions | None, kwargs: dict) -> ReadOptions:
    if options is None:
        unknown = sorted(set(kwargs) - set(ReadOptions.names()))
        if unknown:
            raise TypeError(f"unknown reading option(s): {', '.join(unknown)}")
        return ReadOptions(**kwargs)
    if kwargs:
        raise TypeError("give the reading options as a ReadOptions or as keywords, not both")
    return options


def _build_table(raw: RawTable, options: ReadOptions) -> Table:
    label = options.label
    where = raw.where
    if raw.frame.empty:
        raise DataError(f"{where}no data rows")
    notes: list[str] = []
    counts: dict = {}
    if raw.dialect is not None:
        notes.append(f"read with {raw.dialect.describe()}")
    if label is not None and label not in raw.frame.columns:
        raise missing_column(label, list(raw.frame.columns), "label column", raw.source)
    locate = raw.locate
    if label is not None:
        raw, dropped = _labeled_rows(raw, label, options.drop_unlabeled)
        if dropped:
            counts["unlabeled_dropped"] = dropped
            notes.append(f"dropped {dropped:,} row(s) without a label (--drop-unlabeled)")
    column_roles = inputs.infer_roles(
        raw,
        label=label,
        id_column=options.id_column,
        features=options.features,
        exclude=options.exclude,
        include=options.include,
        categorical=options.categorical,
        roles=options.roles,
        max_levels=options.max_levels,
        time_features=options.time_features,
    )
    decimal = raw.dialect.decimal if raw.dialect else "."
    spec = InputSpec.from_roles(column_roles, decimal)
    if not spec.features:
        left = "; ".join(f"{r.name}: {r.role} ({r.reason})" for r in column_roles[:8])
        raise DataError(
            f"{where}no feature columns left ({left}); keep a column with --include COLUMN"
        )
    notes.extend(_role_notes(column_roles))
    feature_frame = spec.frame(raw.frame, locate=locate, where=where)
    labels = None
    positive_text = None
    if label is not None:
        labels, positive_text = _parse_labels(raw.frame[label], label, options.positive, where)
    keep = None
    duplicated = feature_frame.assign(__label__=labels).duplicated(keep="first").to_numpy()
    n_dupes = int(duplicated.sum())
    if n_dupes:
        counts["duplicate_rows"] = n_dupes
        if options.dedupe:
            keep = np.flatnonzero(~duplicated)
            counts["duplicates_dropped"] = n_dupes
            notes.append(
                f"dropped {n_dupes:,} row(s) whose features and label repeat an earlier row's "
                "(--dedupe)"
            )
        else:
            notes.append(
                f"{n_dupes:,} row(s) repeat an earlier row's features and label exactly; they "
                "may land in both the training and the test rows (drop them with --dedupe)"
            )
    ids = raw.frame[spec.id_column].reset_index(drop=True) if spec.id_column else None
    if keep is not None:
        feature_frame = feature_frame.iloc[keep].reset_index(drop=True)
        labels = labels[keep] if labels is not None else None
        ids = ids.iloc[keep].reset_index(drop=True) if ids is not None else None
    columns = tuple(Column(f.name, f.kind) for f in spec.features)
    schema = Schema(
        columns, label=label, positive=positive_text, id_column=spec.id_column, inputs=spec
    )
    return Table(
        features=feature_frame,
        labels=labels,
        schema=schema,
        fingerprint=fingerprint(feature_frame, labels),
        ids=ids,
        source=raw.source,
        roles=column_roles,
        notes=notes,
        dialect=raw.dialect,
        counts=counts,
    )


def _role_notes(roles: Sequence[ColumnRole]) -> list[str]:
    """One line per kind of column left out, naming all of them."""
    groups: dict[str, list[str]] = {}
    for r in roles:
        if r.role in ("constant", "empty", "id", "timestamp", "excluded") and not r.is_feature:
            groups.setdefault(r.role, []).append(r.name)
    what = {
        "constant": "constant (dropped)",
        "empty": "all missing (dropped)",
        "id": "id, kept for output",
        "timestamp": "timestamps, left out (derive features with --time-features)",
        "excluded": "left out",
    }
    return [
        f"{what[role]}: {', '.join(map(repr, names))}"
        for role in ("id", "timestamp", "constant", "empty", "excluded")
        if (names := groups.get(role))
    ]


def _labeled_rows(raw: RawTable, label: str, drop: bool) -> tuple[RawTable, int]:
    """``raw`` without its unlabeled rows (with ``drop``), else an error if it has any."""
    values = raw.frame[label]
    present = inputs._present(values)
    if present.all():
        return raw, 0
    missing = np.flatnonzero(~present)
    if not drop:
        shown = ", ".join(raw.locate(p) for p in missing[:_SHOWN_LINES])
        more = ", ..." if len(missing) > _SHOWN_LINES else ""
        raise DataError(
            f"{raw.where}label column {label!r} has {len(missing):,} missing value(s) "
            f"(at {shown}{more}); drop those rows with --drop-unlabeled"
        )
    kept = np.flatnonzero(present)
    frame = raw.frame.iloc[kept].reset_index(drop=True)
    original = raw.locate

    def locate(position: int) -> str:
        return original(int(kept[int(position)]))

    return RawTable(frame, raw.source, raw.dialect, locate), len(missing)


def _parse_labels(
    values: pd.Series, name: str, positive: object, where: str
) -> tuple[np.ndarray, str]:
    text = pd.Series(inputs.to_categories(values), dtype=object)
    found = sorted(text.unique().tolist())
    if positive is not None:
        want = category_text(positive)
        if want not in found:
            raise DataError(
                f"{where}positive label {want!r} does not occur in column {name!r} "
                f"(values found: {_show_values(found)})"
            )
        return (text == want).to_numpy().astype(np.int8), want
    lowered = {f.lower() for f in found}
    true_words, false_words = inputs.TRUE_WORDS - {"1"}, inputs.FALSE_WORDS - {"0"}
    if lowered <= {"0", "1"}:
        want = "1"
    elif lowered <= true_words | false_words and len(lowered & true_words) <= 1:
        want = next((f for f in found if f.lower() in true_words), "true")
    else:
        raise DataError(
            f"{where}cannot tell which value of label column {name!r} marks an anomaly "
            f"(values found: {_show_values(found)}); pass the anomaly value with --positive"
        )
    # Words match in any letter case: "Yes" and "yes" are the same label.
    return (text.str.lower() == want.lower()).to_numpy().astype(np.int8), want


def _show_values(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


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
    labels = np.asarray(labels)
    _check_split(seed, val_size, test_size)
    _require_both_classes(labels, what)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    too_few = (
        f"too few rows to split: {n_pos} anomalies and {n_neg} normal rows; "
        "the validation and test parts each need anomalies and normal rows"
    )
    if min(n_pos, n_neg) < 3:
        raise DataError(too_few)
    try:
        split = _two_steps(len(labels), labels, seed, val_size, test_size)
    except ValueError as exc:
        raise DataError(f"{too_few} ({first_line(exc)})") from exc
    train, val, test = split.train, split.val, split.test
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
    return split


def split_unlabeled(
    n_rows: int, *, seed: int = 0, val_size: float = 0.2, test_size: float = 0.2
) -> Split:
    """Random train/validation/test split of rows without labels (same two steps)."""
    _check_split(seed, val_size, test_size)
    if n_rows < 10:
        raise DataError(f"too few rows to split: {n_rows}; anomtune needs at least 10")
    return _two_steps(n_rows, None, seed, val_size, test_size)


def _check_split(seed, val_size: float, test_size: float) -> None:
    if not (0 < test_size < 1 and 0 < val_size < 1 and val_size + test_size < 1):
        raise DataError(
            f"val_size and test_size must be in (0, 1) and sum below 1 "
            f"(got {val_size} and {test_size})"
        )
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"the split seed must be an integer in [0, 2**32 - 1], not {seed!r}")


def _two_steps(n_rows: int, labels, seed, val_size: float, test_size: float) -> Split:
    """The test rows first, then the validation rows as their share of the rest
    (stratified by ``labels`` unless None)."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(
        np.arange(n_rows), test_size=test_size, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=round(val_size / (1.0 - test_size), 12),
        stratify=labels[rest] if labels is not None else None,
        random_state=seed,
    )
    method = "stratified train_test_split, test first"
    if labels is None:
        method = "random train_test_split, test first (no labels)"
    return Split(train, val, test, seed, val_size, test_size, method)


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


def subsample(positions: np.ndarray, labels: np.ndarray | None, n: int, *, seed: int) -> np.ndarray:
    """At most ``n`` of ``positions``, drawn at random with each label's share kept.

    Each label gets its share of ``n`` rounded (at least one row of a label
    that has rows); the positions come back in their original order. All of
    ``positions`` when there are no more than ``n``.
    """
    positions = np.asarray(positions)
    if len(positions) <= n:
        return positions
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(len(positions))]
    else:
        sub = np.asarray(labels)[positions]
        groups = [np.flatnonzero(sub == value) for value in np.unique(sub)]
    picked = []
    for group in groups:
        share = max(1, round(n * len(group) / len(positions)))
        picked.append(rng.choice(group, size=min(share, len(group)), replace=False))
    return positions[np.sort(np.concatenate(picked))]


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
