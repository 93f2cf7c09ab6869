"""A fitted anomaly model: the input encoder, the detector and its threshold, as one.

Persisting, exporting and reporting take an :class:`AnomalyModel`; its
:meth:`~AnomalyModel.module` is the torch graph export traces (raw numeric
block and categorical codes in; score, per-column errors and label out).

A categorical value the training rows never held (a new country, a new
merchant type) is itself a sign of an anomaly, which the one-hot encoding
alone cannot show (it encodes as all zeros, like a missing value). So each
such value adds the detector's highest training score to the row's score
(:func:`unseen_penalty`): the row ranks above every training row and, at the
usual thresholds, is flagged. The value's column carries the added error in
the per-column errors, so ``score --explain`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.data import Schema
from anomtune.detector import AutoencoderDetector
from anomtune.ensemble import Ensemble
from anomtune.preprocess import UNSEEN, InputEncoder, unseen_counts

__all__ = ["AnomalyModel", "unseen_penalty"]


def unseen_penalty(detector: AutoencoderDetector | Ensemble, unseen: np.ndarray) -> np.ndarray:
    """What ``unseen`` values per row (:func:`~anomtune.preprocess.unseen_counts`)
    add to the rows' scores: each one the detector's highest training score."""
    return np.asarray(unseen, dtype=np.float64) * float(detector.max_train_score_)


def _column_weight(detector: AutoencoderDetector | Ensemble) -> float:
    """An unseen value's added error in its column's ``feature_errors`` entry:
    its score penalty in the units the per-column errors sum to (``n_encoded x
    score`` for the reconstruction score, the score itself for the ELBO)."""
    if isinstance(detector, Ensemble):
        return float(detector.max_train_error_)  # the highest training row's total error
    factor = 1 if detector._score_kind() == "elbo" else detector.n_features_in_
    return float(detector.max_train_score_) * factor


@dataclass
class AnomalyModel:
    """An :class:`~anomtune.preprocess.InputEncoder` and a fitted, thresholded detector
    (one autoencoder, or the tuned :class:`~anomtune.ensemble.Ensemble` of several).

    The threshold lives on the detector (``detector.threshold_``, on the
    anomaly-score scale: rows scoring above it are anomalies).
    """

    encoder: InputEncoder
    detector: AutoencoderDetector | Ensemble

    @property
    def schema(self) -> Schema:
        """The fitted schema: feature columns, kinds and vocabularies."""
        return self.encoder.schema_

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold_)

    @property
    def threshold_rule(self) -> str:
        return self.detector.threshold_rule_

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The encoded matrix the detector reads."""
        return self.encoder.encode(frame)

    def anomaly_score(self, frame: pd.DataFrame) -> np.ndarray:
        """Anomaly scores of the rows of ``frame`` (float64; higher is more
        anomalous), unseen categorical values included (:func:`unseen_penalty`)."""
        numeric, codes = self.encoder.split_inputs(frame)
        scores = self.detector.anomaly_score(self.encoder.encode_inputs(numeric, codes))
        return scores + unseen_penalty(self.detector, unseen_counts(codes))

    def column_errors(self, frame: pd.DataFrame) -> np.ndarray:
        """Each table column's squared reconstruction error, per row (the
        graph's ``feature_errors``), an unseen value's weight included."""
        import torch

        numeric, codes = self.encoder.split_inputs(frame)
        X = self.encoder.encode_inputs(numeric, codes)
        errors = self.detector.feature_errors(X).astype(np.float32)
        with torch.no_grad():
            columns = self.encoder.module().columns(torch.from_numpy(errors)).numpy()
        unseen = (codes == UNSEEN).astype(np.float32)
        if unseen.any():
            placed = np.zeros_like(columns)
            placed[:, self._categorical_positions()] = unseen * _column_weight(self.detector)
            columns = columns + placed
        return columns

    def _categorical_positions(self) -> list[int]:
        """Each categorical column's position among the table columns."""
        return [i for i, c in enumerate(self.schema.columns) if c.kind == "categorical"]

    def module(self):
        """The torch module export traces: ``(numeric, codes) -> (score, errors, is_anomaly)``.

        Without categorical columns it takes the numeric block alone.
        """
        import torch
        from torch import nn

        class RawToScore(nn.Module):
            def __init__(self, encode, scorer, threshold: float, penalty: float, placement):
                super().__init__()
                self.encode = encode
                self.scorer = scorer
                self.threshold = threshold
                # The unseen-value rule (unseen_penalty); none for a model
                # without categorical columns or without the recorded weight.
                self.penalty = penalty
                if placement is not None:
                    self.register_buffer("placement", placement)
                else:
                    self.placement = None

            def forward(self, numeric, codes=None):
                score, errors = self.scorer(self.encode(numeric, codes))
                columns = self.encode.columns(errors)
                if self.placement is not None:
                    unseen = (codes == UNSEEN).to(score.dtype)
                    score = score + self.penalty * unseen.sum(dim=1)
                    columns = columns + unseen @ self.placement
                return score, columns, score > self.threshold

        positions = self._categorical_positions()
        penalty = float(self.detector.max_train_score_)
        placement = None
        if positions and penalty > 0:
            # [n_categorical, n_columns]: an unseen value's error, in its column.
            placement = torch.zeros(len(positions), len(self.schema.columns))
            placement[torch.arange(len(positions)), torch.as_tensor(positions)] = _column_weight(
                self.detector
            )
        return RawToScore(
            self.encoder.module(), self.detector.module_, self.threshold, penalty, placement
        ).eval()

    def save(self, folder: str | Path, *, meta: dict | None = None) -> Path:
        """Write the model folder (see :mod:`anomtune.persist`)."""
        from anomtune.persist import save_model

        return save_model(self, folder, meta=meta)

    @classmethod
    def load(cls, folder: str | Path) -> AnomalyModel:
        from anomtune.persist import load_model

        return load_model(folder)[0]
