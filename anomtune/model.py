"""A fitted anomaly model: the input encoder, the detector and its threshold, as one.

Persisting, exporting and reporting take an :class:`AnomalyModel`; its
:meth:`~AnomalyModel.module` is the torch graph export traces (raw numeric
block and categorical codes in; score, per-column errors and label out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune.data import Schema
from anomtune.detector import AutoencoderDetector
from anomtune.preprocess import InputEncoder

__all__ = ["AnomalyModel"]


@dataclass
class AnomalyModel:
    """An :class:`~anomtune.preprocess.InputEncoder` and a fitted, thresholded detector.

    The threshold lives on the detector (``detector.threshold_``, on the
    anomaly-score scale: rows scoring above it are anomalies).
    """

    encoder: InputEncoder
    detector: AutoencoderDetector

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
        """Anomaly scores of the rows of ``frame`` (float64; higher is more anomalous)."""
        return self.detector.anomaly_score(self.encode(frame))

    def column_errors(self, frame: pd.DataFrame) -> np.ndarray:
        """Each table column's share of the squared reconstruction error, per row."""
        import torch

        errors = self.detector.feature_errors(self.encode(frame)).astype(np.float32)
        with torch.no_grad():
            return self.encoder.module().columns(torch.from_numpy(errors)).numpy()

    def module(self):
        """The torch module export traces: ``(numeric, codes) -> (score, errors, is_anomaly)``.

        Without categorical columns it takes the numeric block alone.
        """
        from torch import nn

        class RawToScore(nn.Module):
            def __init__(self, encode, scorer, threshold: float):
                super().__init__()
                self.encode = encode
                self.scorer = scorer
                self.threshold = threshold

            def forward(self, numeric, codes=None):
                score, errors = self.scorer(self.encode(numeric, codes))
                return score, self.encode.columns(errors), score > self.threshold

        return RawToScore(self.encoder.module(), self.detector.module_, self.threshold).eval()

    def save(self, folder: str | Path, *, meta: dict | None = None) -> Path:
        """Write the model folder (see :mod:`anomtune.persist`)."""
        from anomtune.persist import save_model

        return save_model(self, folder, meta=meta)

    @classmethod
    def load(cls, folder: str | Path) -> AnomalyModel:
        from anomtune.persist import load_model

        return load_model(folder)[0]
