"""The model being served: one warm Scorer, swapped atomically when a reload finds another."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from anomtune.errors import DataError
from anomtune.scoring import Scorer
from anomtune.serving.feeds import feeds_from_columns
from anomtune.serving.protocol import bad_request
from anomtune.serving.references import ModelInfo, Resolver, info_from

__all__ = ["LoadedModel", "ModelHolder"]

logger = logging.getLogger("anomtune.serving")


class LoadedModel:
    """One warm onnxruntime session with everything a request needs precomputed."""

    def __init__(self, data: bytes, info: ModelInfo, *, threads: int = 1):
        self.scorer = Scorer(data, threads=threads, source=info.ref)
        self.info = info
        self.loaded_at = time.time()
        self.numeric = self.scorer.numeric
        self.categorical = self.scorer.categorical
        self.feature_names = self.scorer.feature_names
        self.headers = {"X-Anomtune-Model": info.name, "X-Anomtune-Model-Sha256": info.sha256}
        if info.version is not None:
            self.headers["X-Anomtune-Model-Version"] = str(info.version)
        self.model_json = json.dumps(info.to_dict()).encode()
        # Rows scored and flagged since the model was loaded (/metadata's flag_rate).
        self._tally = threading.Lock()
        self.rows_scored = self.rows_flagged = 0
        self._warned = False
        # The first run of a session allocates; do it now, not on a request.
        self.scorer.run(
            self.feeds({name: [None] for name in self.scorer.columns}, 1, reject_missing=False)
        )

    def check_columns(self, present) -> None:
        try:
            self.scorer.check_columns(present)
        except DataError as exc:
            raise bad_request(f"{exc}; the model takes {self._names()}") from exc

    def _names(self) -> str:
        names = self.scorer.columns
        shown = ", ".join(map(repr, names[:20]))
        return f"{len(names)} columns: {shown}" + (", ..." if len(names) > 20 else "")

    def feeds(self, columns: Mapping[str, Any], n: int, *, reject_missing: bool) -> dict:
        """The graph's inputs from a request's ``{column: values}`` (every model column)."""
        try:
            return feeds_from_columns(
                columns, n, spec=self.scorer.spec, reject_missing=reject_missing
            )
        except DataError as exc:
            raise bad_request(str(exc)) from exc

    def run(
        self, columns: Mapping[str, Any], n: int, *, reject_missing: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(score, feature_errors, is_anomaly)``, scored by :meth:`Scorer.run` (which runs
        the slices of a large request on the scorer's threads)."""
        score, errors, label = self.scorer.run(
            self.feeds(columns, n, reject_missing=reject_missing)
        )
        flagged = int(np.count_nonzero(label))
        with self._tally:
            self.rows_scored += len(label)
            self.rows_flagged += flagged
            rows, flagged = self.rows_scored, self.rows_flagged
        if not self._warned:
            warning = self.scorer.flag_rate_warning(flagged, rows)
            if warning:
                self._warned = True
                logger.warning("%s: %s", self.info.ref, warning)
        return score, errors, label

    def flag_rate(self) -> dict:
        """The flagged share of the rows scored since loading, against validation's."""
        with self._tally:
            rows, flagged = self.rows_scored, self.rows_flagged
        return {
            "rows": rows,
            "flagged": flagged,
            "share": flagged / rows if rows else None,
            "validation_share": self.scorer.validation_flag_rate,
            "warning": self.scorer.flag_rate_warning(flagged, rows),
        }

    def categories(self) -> dict[str, list]:
        """The categories each categorical column was trained with, from the schema."""
        return {
            c.get("name"): c.get("categories") or []
            for c in self.scorer.metadata.get("schema", {}).get("columns", [])
        }

    def metadata(self) -> dict:
        meta = self.scorer.metadata
        return {
            **self.info.to_dict(),
            "ref": self.info.ref,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "threshold": self.scorer.threshold,
            "threshold_rule": meta.get("threshold_rule"),
            "score": meta.get("score"),
            "feature_names": self.feature_names,
            "columns": meta.get("schema", {}).get("columns", []),
            "inputs": {"numeric": self.numeric, "categorical": self.categorical},
            "outputs": ["score", "is_anomaly", "feature_errors"],
            "metrics": meta.get("metrics"),
            "params": meta.get("params"),
            "architecture": meta.get("architecture"),
            "data_fingerprint": meta.get("data_fingerprint"),
            "flag_rate": self.flag_rate(),
            "format": meta.get("format"),
            "anomtune_version": meta.get("anomtune_version"),
        }


class ModelHolder:
    """The model being served, swapped atomically when the resolver's answer changes."""

    def __init__(self, resolver: Resolver, *, threads: int = 1):
        self.resolver = resolver
        self.threads = threads
        self._lock = threading.Lock()
        self.current: LoadedModel = self._load(*self._fetch())

    def _fetch(self) -> tuple[bytes, ModelInfo]:
        data, raw = self.resolver()
        return data, info_from(raw, hashlib.sha256(data).hexdigest())

    def _load(self, data: bytes, info: ModelInfo) -> LoadedModel:
        return LoadedModel(data, info, threads=self.threads)

    def reload(self) -> dict:
        """Resolve again; load and swap in the model if it changed. Returns what happened."""
        with self._lock:
            previous = self.current
            data, info = self._fetch()
            old = previous.info
            changed = (info.sha256, info.version, info.name) != (old.sha256, old.version, old.name)
            if changed:
                fresh = self._load(data, info)
                if fresh.feature_names != previous.feature_names:
                    logger.warning(
                        "the new model %s takes other columns than %s", info.label, old.label
                    )
                self.current = fresh  # one reference assignment: requests see old or new
                logger.info("now serving %s (was %s)", info.label, old.label)
        return {
            "changed": changed,
            "model": self.current.info.to_dict(),
            "previous": previous.info.to_dict(),
        }
