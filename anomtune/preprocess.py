"""The model's input encoder (impute, one-hot) and the feature scaler.

Both are fitted on training rows only and run as torch modules, the same
ones for training, the refit, the report and the exported graph:

- :class:`InputEncoder`: impute numeric columns with the training median and
  one-hot encode categorical columns with the training vocabulary (the most
  frequent ``max_categories`` values; rarer values, values never seen in
  training, and missing ones encode as all zeros). Its module takes the raw
  numeric block and the categorical codes (:meth:`InputEncoder.split_inputs`),
  whose negative codes tell these three apart (:data:`MISSING`, :data:`RARE`,
  :data:`UNSEEN`): an unseen value adds to the row's score
  (:func:`anomtune.model.unseen_penalty`).
- :class:`Scaler`: standard, robust or min-max scaling of the encoded
  matrix; the detector fits it, since the scaling is one of its parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomtune.data import CATEGORICAL, NUMERIC, Column, Schema
from anomtune.errors import ConfigError, DataError
from anomtune.inputs import category_text, features_feeds

__all__ = ["MISSING", "RARE", "SCALERS", "UNSEEN", "InputEncoder", "Scaler", "raw_inputs"]

SCALERS = ("standard", "robust", "minmax", "none")

#: The code of a missing categorical value (encoded as all zeros).
MISSING = -1
#: The code of a value seen in the training rows but outside the vocabulary
#: (rarer than the ``max_categories`` most frequent ones): all zeros.
RARE = -2
#: The code of a value the training rows never held: all zeros, and the row's
#: score rises (:func:`anomtune.model.unseen_penalty`).
UNSEEN = -3


def raw_inputs(
    frame: pd.DataFrame, schema: Schema, rare: dict[str, tuple[str, ...]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A frame as model inputs: the numeric block (float32, NaN kept) and the
    categorical codes (int64: the vocabulary position, or :data:`MISSING`,
    :data:`RARE` for a value in ``rare[column]``, :data:`UNSEEN` otherwise).

    ``schema`` is a fitted one: its categorical columns carry their vocabulary.
    """
    missing = [c for c in schema.feature_names if c not in frame.columns]
    if missing:
        raise DataError(f"missing feature column(s): {', '.join(map(repr, missing))}")
    # The same rules as every other door (anomtune.inputs), so a category read
    # as 1.0 here and as "1" in training is the same category.
    feeds = features_feeds(frame, schema.numeric, schema.categorical)
    numeric = feeds["numeric"]
    codes = np.full((len(frame), len(schema.categorical)), MISSING, dtype=np.int64)
    cats = [c for c in schema.columns if c.kind == CATEGORICAL]
    for j, col in enumerate(cats):
        lookup = code_lookup(col.categories, (rare or {}).get(col.name, ()))
        codes[:, j] = [lookup.get(v, UNSEEN) for v in feeds["categorical"][:, j]]
    return numeric, codes


def code_lookup(vocab, rare) -> dict[str, int]:
    """Category text to code: the vocabulary's positions, rare values and ``""``
    (missing); anything else is :data:`UNSEEN`. The exported graph's lookup
    holds the same pairs."""
    return {"": MISSING, **{v: RARE for v in rare}, **{v: k for k, v in enumerate(vocab)}}


class InputEncoder:
    """Impute and one-hot encode the feature columns of a table.

    Parameters
    ----------
    schema : Schema
        The columns to encode, in order.
    max_categories : int
        The largest vocabulary kept per categorical column.
    """

    def __init__(self, schema: Schema, *, max_categories: int = 50):
        self.schema = schema
        self.max_categories = max_categories

    def fit(self, frame: pd.DataFrame) -> InputEncoder:
        if self.max_categories < 1:
            raise ConfigError(f"max_categories must be at least 1, not {self.max_categories}")
        missing = [c for c in self.schema.feature_names if c not in frame.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(map(repr, missing))}")
        medians = {}
        rare: dict[str, tuple[str, ...]] = {}
        columns = []
        for col in self.schema.columns:
            if col.kind == NUMERIC:
                values = frame[col.name].to_numpy(dtype="float64", na_value=np.nan)
                finite = values[~np.isnan(values)]
                medians[col.name] = float(np.median(finite)) if finite.size else 0.0
                columns.append(Column(col.name, NUMERIC))
            else:
                counts = frame[col.name].dropna().map(category_text).value_counts()
                counts = counts[counts.index != ""]
                # Most frequent first; ties broken by value so the order is reproducible.
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                vocab = tuple(v for v, _ in ranked[: self.max_categories])
                rare[col.name] = tuple(v for v, _ in ranked[self.max_categories :])
                if not vocab:
                    # An empty vocabulary would encode to no columns at all,
                    # which the torch module cannot tell from a numeric column.
                    raise DataError(
                        f"categorical column {col.name!r} has no values in the training "
                        "rows; leave it out with --exclude"
                    )
                columns.append(Column(col.name, CATEGORICAL, vocab))
        self.medians_ = medians
        self.rare_ = {k: v for k, v in rare.items() if v}
        self.schema_ = self.schema.with_columns(columns)
        return self

    @property
    def output_names(self) -> list[str]:
        """Names of the encoded columns: numeric names, then ``column=value``."""
        names = []
        for col in self.schema_.columns:
            if col.kind == NUMERIC:
                names.append(col.name)
            else:
                names.extend(f"{col.name}={v}" for v in col.categories)
        return names

    @property
    def output_groups(self) -> np.ndarray:
        """For each encoded column, the position of the table column it came from."""
        groups = []
        for i, col in enumerate(self.schema_.columns):
            groups.extend([i] * (1 if col.kind == NUMERIC else len(col.categories)))
        return np.asarray(groups, dtype=np.int64)

    def split_inputs(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The raw numeric block (float32, NaN kept) and categorical codes (see
        :func:`raw_inputs`)."""
        return raw_inputs(frame, self.schema_, self.rare_)

    def lookups(self) -> list[dict[str, int]]:
        """Per categorical column, category text to code (:func:`code_lookup`)."""
        cats = [c for c in self.schema_.columns if c.kind == CATEGORICAL]
        return [code_lookup(c.categories, self.rare_.get(c.name, ())) for c in cats]

    def module(self):
        """The torch module: ``(numeric float32 with NaN, int64 codes) -> encoded matrix``."""
        import torch

        from anomtune.models.blocks import EncodeInputs

        medians = [self.medians_[n] for n in self.schema_.numeric]
        # 0 marks a numeric column; a positive number is a vocabulary size.
        layout = [0 if c.kind == NUMERIC else len(c.categories) for c in self.schema_.columns]
        return EncodeInputs(torch.tensor(medians, dtype=torch.float32), layout).eval()

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """``frame`` through :meth:`module`: float32, ``len(output_names)`` columns."""
        return self.encode_inputs(*self.split_inputs(frame))

    def encode_inputs(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The encoded matrix of inputs already split by :meth:`split_inputs`."""
        import torch

        with torch.no_grad():
            out = self.module()(torch.from_numpy(numeric), torch.from_numpy(codes))
        return out.numpy()

    def unseen(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row, how many categorical values the training rows never held."""
        return unseen_counts(self.split_inputs(frame)[1])

    def to_dict(self) -> dict:
        return {
            "schema": self.schema_.to_dict(),
            "medians": self.medians_,
            "rare": {k: list(v) for k, v in self.rare_.items()},
            "max_categories": self.max_categories,
        }

    @classmethod
    def from_dict(cls, data: dict) -> InputEncoder:
        schema = Schema.from_dict(data["schema"])
        obj = cls(schema, max_categories=data["max_categories"])
        obj.schema_ = schema
        obj.medians_ = {k: float(v) for k, v in data["medians"].items()}
        obj.rare_ = {k: tuple(v) for k, v in data.get("rare", {}).items()}
        return obj


def unseen_counts(codes: np.ndarray) -> np.ndarray:
    """Per row, the number of :data:`UNSEEN` codes (float64)."""
    return (np.asarray(codes) == UNSEEN).sum(axis=1).astype(np.float64)


class Scaler:
    """Column scaling fitted on training rows.

    ``standard`` subtracts the mean and divides by the standard deviation,
    ``robust`` uses the median and the interquartile range, ``minmax`` maps
    the training range to [0, 1], ``none`` leaves values as they are. A
    constant column gets a scale of 1 so it never divides by zero.
    """

    def __init__(self, kind: str = "standard"):
        self.kind = kind

    def fit(self, X: np.ndarray) -> Scaler:
        if self.kind not in SCALERS:
            raise ConfigError(f"scaler must be one of {', '.join(SCALERS)}, not {self.kind!r}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise DataError(f"the scaler needs a 2-d matrix with rows, not shape {X.shape}")
        if not np.isfinite(X).all():
            raise DataError("the scaler's training rows contain NaN or infinite values")
        if self.kind == "standard":
            center, scale = X.mean(axis=0), X.std(axis=0)
        elif self.kind == "robust":
            q1, med, q3 = np.percentile(X, [25, 50, 75], axis=0)
            center, scale = med, q3 - q1
        elif self.kind == "minmax":
            lo, hi = X.min(axis=0), X.max(axis=0)
            center, scale = lo, hi - lo
        else:
            center, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        self.center_ = center.astype(np.float32)
        self.scale_ = scale.astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float32) - self.center_) / self.scale_).astype(np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def as_module(self):
        """A torch module computing :meth:`transform`."""
        import torch

        from anomtune.models.blocks import Affine

        return Affine(torch.from_numpy(self.center_.copy()), torch.from_numpy(self.scale_.copy()))
