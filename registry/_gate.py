"""Promotion with a gate: score candidate and current holder on the same labeled rows.

Both models are scored with onnxruntime (:func:`anomtune.scoring.load_scorer`)
on every row of one labeled file. ``auc-pr`` and ``auc-roc`` rank the
scores; ``f1`` is the F1 of the model's own ``is_anomaly`` output, i.e. at
the threshold it ships with. A gate can ask the candidate to beat the
holder on one metric (strictly) and to reach floors on any metrics. A
refused promotion changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anomtune.errors import ConfigError, DataError
from anomtune.registry._errors import PromotionRefused, RegistryError
from anomtune.registry._names import ModelRef, validate_alias, validate_name
from anomtune.registry._record import Record
from anomtune.registry._registry import ACTIVE, AliasMove, Registry

__all__ = [
    "METRICS",
    "Check",
    "Gate",
    "GateResult",
    "Promotion",
    "parse_floor",
    "promote",
    "score_models",
]

METRICS = ("auc-pr", "auc-roc", "f1")


def metric_name(text: str) -> str:
    """``auc_pr``, ``AUC-PR`` and ``auc-pr`` all name ``auc-pr``."""
    name = text.strip().lower().replace("_", "-")
    if name not in METRICS:
        raise ConfigError(f"unknown metric {text!r} (choose from {', '.join(METRICS)})")
    return name


def parse_floor(text: str) -> tuple[str, float]:
    """``auc-pr=0.8`` as ``("auc-pr", 0.8)``."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"--min takes METRIC=VALUE (e.g. auc-pr=0.8), not {text!r}")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"--min {key}: {raw!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--min {key}: {value} is outside 0..1")
    return metric_name(key), value


@dataclass
class Gate:
    """What a promotion must show on a labeled file before the alias moves."""

    data: str
    label: str
    positive: str | None = None
    sep: str | None = None
    if_better: bool = False
    metric: str = "auc-pr"
    floors: dict[str, float] = field(default_factory=dict)


@dataclass
class Check(Record):
    """One rule of the gate and whether the candidate passed it."""

    kind: str  # "better" or "floor"
    metric: str
    candidate: float
    bar: float | None
    passed: bool


@dataclass
class GateResult(Record):
    """Both models' metrics on the same rows, the checks and the verdict."""

    data: str
    rows: int
    anomalies: int
    alias: str
    candidate: str
    holder: str | None
    metrics: dict[str, dict[str, float]]
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def reason(self) -> str:
        """One line: why the gate refused, or what it showed."""
        parts = []
        for c in self.checks:
            if c.kind == "better":
                if c.bar is None:
                    parts.append(f"no current @{self.alias} to beat")
                    continue
                verb = "beats" if c.passed else "does not beat"
                parts.append(
                    f"{c.metric} {c.candidate:.4f} {verb} @{self.alias} {self.holder} ({c.bar:.4f})"
                )
            else:
                verb = "reaches" if c.passed else "is below"
                parts.append(f"{c.metric} {c.candidate:.4f} {verb} the floor {c.bar:.4f}")
        shown = [p for p, c in zip(parts, self.checks, strict=True) if not c.passed] or parts
        return f"{self.candidate} on {self.data} ({self.rows} rows): " + "; ".join(shown)

    def table(self) -> str:
        """The comparison, one metric a line."""
        holder_head = f"@{self.alias} {self.holder}" if self.holder else f"@{self.alias} (none)"
        head = ["metric", f"candidate {self.candidate}", holder_head, "gate"]
        lines = []
        for metric in METRICS:
            cand = self.metrics[self.candidate][metric]
            held = self.metrics.get(self.holder or "", {}).get(metric)
            rules = []
            for c in self.checks:
                if c.metric != metric:
                    continue
                mark = "pass" if c.passed else "FAIL"
                if c.kind == "better":
                    rules.append(f"must beat @{self.alias}: {mark}" if c.bar is not None else "")
                else:
                    rules.append(f">= {c.bar:.4f}: {mark}")
            lines.append(
                [
                    metric,
                    _fmt(cand),
                    _fmt(held) if held is not None else "-",
                    "; ".join(r for r in rules if r),
                ]
            )
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(4)]
        out = [
            f"gate data: {self.data} ({self.rows} rows, {self.anomalies} anomalies)",
            "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
        ]
        out += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "passed": self.passed}


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _metrics(model: bytes, source: str, gate_data: str, label: str, positive, sep) -> dict:
    """A model's metrics on a labeled file, streamed in chunks like ``anomtune score``."""
    from anomtune.batch import labeled_scores
    from anomtune.metrics import auc_pr, auc_roc
    from anomtune.scoring import load_scorer

    try:
        scores, flagged, truth = labeled_scores(
            load_scorer(model), gate_data, label, positive=positive, sep=sep
        )
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from exc
    labels = truth.astype(np.int8)
    if labels.min() == labels.max():
        raise DataError(
            f"{gate_data}: label column {label!r} has only one class; "
            "the gate needs labeled anomalies and normal rows"
        )
    tp = int(np.sum(flagged & truth))
    fp = int(np.sum(flagged & ~truth))
    fn = int(np.sum(~flagged & truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics = {
        "auc-pr": auc_pr(labels, scores),
        "auc-roc": auc_roc(labels, scores),
        "f1": f1,
        "precision": precision,
        "recall": recall,
    }
    return metrics, len(labels), int(labels.sum())


def score_models(
    models: dict[str, bytes],
    data: str,
    label: str,
    positive: str | None = None,
    sep: str | None = None,
) -> tuple[dict[str, dict[str, float]], int, int]:
    """Each model's metrics on the labeled rows of ``data``; also rows and anomalies."""
    out = {}
    rows = anomalies = 0
    for ref, blob in models.items():
        out[ref], rows, anomalies = _metrics(blob, ref, data, label, positive, sep)
    return out, rows, anomalies


@dataclass
class Promotion(Record):
    """What ``promote`` did: the move (None if the version already held the alias)."""

    name: str
    alias: str
    version: int
    previous: int | None
    move: AliasMove | None
    gate: GateResult | None

    @property
    def moved(self) -> bool:
        return self.move is not None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "moved": self.moved}


def promote(
    registry: Registry,
    name: str,
    version: int,
    alias: str,
    *,
    gate: Gate | None = None,
    reason: str = "",
) -> Promotion:
    """Point ``name@alias`` at ``version``, after the gate (if any) passes.

    Raises :class:`PromotionRefused` (carrying the :class:`GateResult` as
    ``.result``) when the gate refuses; nothing changes then.
    """
    validate_name(name)
    validate_alias(alias)
    candidate = registry.get(ModelRef(name=name, version=int(version)))
    if candidate.status != ACTIVE:
        raise RegistryError(
            f"{candidate.ref} is archived; restore it first "
            f"(anomtune registry archive {candidate.ref} --restore)"
        )
    holder = registry.aliases(name).get(alias)
    if holder == candidate.version:
        return Promotion(name, alias, candidate.version, holder, None, None)
    result = None
    # The file must still be the one registered: an alias never moves to a
    # model that would be refused on load.
    blob, _ = registry.load(candidate.ref)
    if gate is not None:
        models = {candidate.ref: blob}
        holder_ref = f"{name}/{holder}" if holder is not None else None
        if holder_ref is not None:
            models[holder_ref], _ = registry.load(holder_ref)
        metrics, rows, anomalies = score_models(
            models, gate.data, gate.label, gate.positive, gate.sep
        )
        checks = []
        if gate.if_better:
            metric = metric_name(gate.metric)
            mine = metrics[candidate.ref][metric]
            bar = metrics[holder_ref][metric] if holder_ref is not None else None
            checks.append(Check("better", metric, mine, bar, bar is None or mine > bar))
        for metric, floor in gate.floors.items():
            mine = metrics[candidate.ref][metric_name(metric)]
            checks.append(Check("floor", metric_name(metric), mine, floor, mine >= floor))
        result = GateResult(
            gate.data, rows, anomalies, alias, candidate.ref, holder_ref, metrics, checks
        )
        if not result.passed:
            raise PromotionRefused(f"promotion refused: {result.reason()}", result)
        if checks:
            reason = "; ".join(p for p in (reason, "gate passed: " + result.reason()) if p)
    # A gate's verdict holds only against the holder it compared with, so a gated
    # move refuses if the alias moved meanwhile; a plain promotion just moves it
    # (concurrent ones apply one after another, each recording the holder it replaced).
    expect = holder if result is not None else ...
    move = registry.set_alias(name, alias, candidate.version, reason=reason, expect=expect)
    previous = move.from_version if move is not None else candidate.version
    return Promotion(name, alias, candidate.version, previous, move, result)
