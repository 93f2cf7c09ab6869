"""The tuned ensemble: the best few (trial, score) pairs on validation, as one score.

``anomtune tune`` ships this by default (``--ensemble 5``). Two scores of one
tuned autoencoder, both on its scaled features:

``reconstruction``
    the network's own score, the mean squared reconstruction error (the
    negative ELBO for a VAE with ``vae_score="elbo"``);
``residual``
    the distance from a row's residual vector (reconstruction minus input)
    to the nearest residual of the *reference rows*, a seeded sample of at
    most :data:`REFERENCE_ROWS` training rows whose residuals are constants
    of the graph. A row can reconstruct as well as the normal ones and still
    leave a residual unlike any of theirs.

Every complete trial contributes both scores, each with its own validation
value; the ``size`` pairs with the best values are the members
(:func:`anomtune.tuning.refit.select_members`). Each member's score is
divided by the interquartile range of its scores on the reference rows (a
reference row's residual distance leaves the row itself out), and the
ensemble's score is the mean of these. Both scores are at least 0, and so is
the ensemble's: no centring, which would shift every row alike and reorder
none, so that the unseen-value rule (:func:`anomtune.model.unseen_penalty`,
the highest reference-row score added) still ranks such a row above every
reference row. A small validation split cannot tell the best few trials apart; their
mean is steadier than any one of them. The choice of this rule (five pairs,
these two scores) was measured on the ADBench sets, and checked on a split
they were not chosen on: ``benchmarks/levers.py``, ``benchmarks/quality.py``.

An :class:`Ensemble` scores like an
:class:`~anomtune.detector.AutoencoderDetector` (``anomaly_score``,
``feature_errors``, ``module_``, a threshold), so that an
:class:`~anomtune.model.AnomalyModel` holds either, and persists and exports
either as one graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anomtune.detector import AutoencoderDetector, _one_cpu_thread

__all__ = [
    "ENSEMBLE_SIZE",
    "KINDS",
    "REFERENCE_ROWS",
    "Ensemble",
    "EnsembleModule",
    "Member",
    "nearest_distance",
    "reference_positions",
    "residual_scores",
]

#: The score kinds of one network.
KINDS = ("reconstruction", "residual")
#: The (trial, score) pairs of the default ensemble.
ENSEMBLE_SIZE = 5
#: At most this many training rows hold the residuals the residual score is
#: measured against. Every training row of the ADBench sets of at most 12,000
#: rows fits; a larger table's sample bounds the graph's constants (rows x
#: encoded features per network) and its distance matrix per scored row.
REFERENCE_ROWS = 8192
# Rows per distance matrix in Python: 512 x 8,192 float64 is 32 MB, and its
# arithmetic holds about four at once. At 2,048 rows the peak of scoring 100,000
# rows was 190 MB higher at no gain in time.
_CHUNK = 512


def reference_positions(n_rows: int, *, seed: int) -> np.ndarray:
    """The positions, among ``n_rows`` training rows, of the reference rows."""
    if n_rows <= REFERENCE_ROWS:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=REFERENCE_ROWS, replace=False))


def nearest_distance(q: torch.Tensor, reference: torch.Tensor, norms: torch.Tensor, exclude=None):
    """Euclidean distance from each row of ``q`` to its nearest row of ``reference``
    (``norms``: the reference rows' squared norms; ``exclude``: per row of
    ``q``, a reference position to skip).

    The nearest row is found with one matrix product, and its distance is
    then computed directly: the product's form ``|q|^2 - 2 q.r + |r|^2``
    cancels to rounding noise for a row equal to a reference row, whose
    square root would be far from the exact 0.
    """
    d2 = (q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ reference.T) + norms
    if exclude is not None:
        d2[torch.arange(len(q)), exclude] = torch.inf
    nearest = reference[d2.argmin(dim=1)]
    return ((q - nearest) ** 2).sum(dim=1).sqrt()


def _double(module: nn.Module) -> nn.Module:
    """A float64 copy: Python scores in float64, as the detector does."""
    return copy.deepcopy(module).double().eval()


def _residuals(scorer: nn.Module, X: np.ndarray) -> np.ndarray:
    """The residual vectors of raw rows ``X`` under a float64 scorer."""
    out = []
    with torch.no_grad():
        for start in range(0, len(X), _CHUNK):
            x = torch.from_numpy(np.asarray(X[start : start + _CHUNK], dtype=np.float64))
            out.append(scorer.parts(x)[2].numpy())
    return np.concatenate(out) if out else np.zeros((0, X.shape[1]))


def _distances(queries: np.ndarray, reference: np.ndarray, *, leave_self_out: bool = False):
    """Nearest-reference distances of ``queries``; with ``leave_self_out`` the
    queries are the reference rows and each skips itself."""
    ref = torch.from_numpy(np.asarray(reference, dtype=np.float64))
    norms = (ref * ref).sum(dim=1)
    out = np.empty(len(queries))
    with torch.no_grad():
        for start in range(0, len(queries), _CHUNK):
            q = torch.from_numpy(np.asarray(queries[start : start + _CHUNK], dtype=np.float64))
            skip = torch.arange(start, start + len(q)) if leave_self_out else None
            out[start : start + len(q)] = nearest_distance(q, ref, norms, skip).numpy()
    return out


def residual_scores(detector: AutoencoderDetector, X_reference: np.ndarray, X: np.ndarray):
    """The residual score of rows ``X`` against reference rows ``X_reference``
    (a trial's value of the score is taken on its validation rows)."""
    scorer = _double(detector.module_)
    with _one_cpu_thread(detector.device_):
        return _distances(_residuals(scorer, X), _residuals(scorer, X_reference))


def _spread(scores: np.ndarray) -> float:
    """The interquartile range (the standard deviation, or 1, if that is 0)."""
    q1, q3 = np.percentile(scores, [25, 75])
    scale = float(q3 - q1)
    if not scale > 0:
        scale = float(np.std(scores)) or 1.0
    return scale


@dataclass(frozen=True)
class Member:
    """One (network, score kind) pair of an ensemble, with where it came from."""

    network: int  # index into the ensemble's detectors
    kind: str  # one of KINDS
    trial: int | None = None  # the study's trial number
    value: float | None = None  # its validation value, which chose it


class EnsembleModule(nn.Module):
    """Encoded rows -> (ensemble score, per-feature squared errors).

    The per-feature errors are the mean of the networks' own (each on its
    scaled features), so ``score --explain`` still names the columns the
    networks reconstruct worst.
    """

    def __init__(self, scorers, members, scale, references):
        super().__init__()
        self.scorers = nn.ModuleList(scorers)
        self.members = [(int(m.network), str(m.kind)) for m in members]
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))
        self.residual_networks = sorted({n for n, k in self.members if k == "residual"})
        for n in self.residual_networks:
            ref = torch.as_tensor(np.asarray(references[n]), dtype=torch.float32)
            self.register_buffer(f"reference{n}", ref)
            self.register_buffer(f"norms{n}", (ref * ref).sum(dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [scorer.parts(x) for scorer in self.scorers]
        total = None
        for j, (n, kind) in enumerate(self.members):
            score, _, residual = parts[n]
            if kind == "residual":
                score = nearest_distance(
                    residual, getattr(self, f"reference{n}"), getattr(self, f"norms{n}")
                )
            term = score / self.scale[j]
            total = term if total is None else total + term
        errors = parts[0][1]
        for p in parts[1:]:
            errors = errors + p[1]
        return total / len(self.members), errors / len(parts)


class Ensemble:
    """Fitted members and their spreads: scores like a detector."""

    def __init__(
        self,
        detectors: list[AutoencoderDetector],
        members: list[Member],
        *,
        scale,
        references: dict[int, np.ndarray],
        reference_rows: int,
    ):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.detectors = list(detectors)
        self.members = list(members)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.references = dict(references)
        self.reference_rows = int(reference_rows)
        self.n_features_in_ = int(self.detectors[0].n_features_in_)
        self.module_ = EnsembleModule(
            [d.module_ for d in self.detectors], self.members, self.scale, references
        ).eval()
        self.threshold_ = float("inf")
        self.threshold_rule_ = "none"
        self.max_train_score_ = 0.0
        self.max_train_error_ = 0.0

    @classmethod
    def fit(
        cls,
        detectors: list[AutoencoderDetector],
        members: list[Member],
        X_train: np.ndarray,
        *,
        seed: int,
    ) -> Ensemble:
        """Each member's spread on the reference rows of ``X_train``."""
        X_ref = np.asarray(X_train)[reference_positions(len(X_train), seed=seed)]
        residual_nets = {m.network for m in members if m.kind == "residual"}
        references, ref_scores = {}, {}
        errors = np.zeros(len(X_ref))
        for n, detector in enumerate(detectors):
            scorer = _double(detector.module_)
            with _one_cpu_thread(detector.device_):
                residual = _residuals(scorer, X_ref)
            errors += (residual**2).sum(axis=1)
            if n in residual_nets:
                # Stored (and read back) as float32, the graph's constants.
                references[n] = residual.astype(np.float32)
                ref_scores[n] = _distances(references[n], references[n], leave_self_out=True)
        per_member = []
        for m in members:
            if m.kind == "residual":
                per_member.append(ref_scores[m.network])
            else:
                per_member.append(detectors[m.network].anomaly_score(X_ref))
        scale = [_spread(s) for s in per_member]
        ensemble = cls(
            detectors,
            members,
            scale=scale,
            references=references,
            reference_rows=len(X_ref),
        )
        scaled = np.mean([s / k for s, k in zip(per_member, scale, strict=True)], axis=0)
        finite = np.isfinite(scaled).all()
        # What an unseen categorical value adds (anomtune.model.unseen_penalty)
        # and, in its column, to the per-column errors: the highest of the
        # reference rows, so that such a row outranks every one of them.
        ensemble.max_train_score_ = float(scaled.max()) if finite else 0.0
        ensemble.max_train_error_ = float(errors.max() / len(detectors)) if len(X_ref) else 0.0
        return ensemble

    # -- scoring, as the detector does ---------------------------------------

    def _forward(self, X) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[-1]} features, but the ensemble expects {self.n_features_in_}"
            )
        module = _double(self.module_)
        scores = np.empty(len(X))
        errors = np.empty(X.shape)
        with _one_cpu_thread(torch.device("cpu")), torch.no_grad():
            for start in range(0, len(X), _CHUNK):
                x = torch.from_numpy(X[start : start + _CHUNK]).double()
                s, e = module(x)
                scores[start : start + len(x)] = s.numpy()
                errors[start : start + len(x)] = e.numpy()
        return scores, errors

    def anomaly_score(self, X) -> np.ndarray:
        """The ensemble score per row: the mean of the members' scores, each in
        units of its reference-row interquartile range."""
        return self._forward(X)[0]

    def feature_errors(self, X) -> np.ndarray:
        """Per-feature squared reconstruction errors, the mean over the networks."""
        return self._forward(X)[1]

    def set_threshold(self, threshold: float, *, rule: str = "user") -> Ensemble:
        self.threshold_ = float(threshold)
        self.threshold_rule_ = rule
        return self

    def describe(self) -> list[dict]:
        """What summary.json and the graph's metadata record of each member."""
        out = []
        for j, m in enumerate(self.members):
            d = self.detectors[m.network]
            out.append(
                {
                    "trial": m.trial,
                    "score": m.kind,
                    "value": m.value,
                    "network": m.network,
                    "variant": d.variant,
                    "hidden_sizes": list(d.hidden_sizes_),
                    "latent_dim": int(d.latent_dim_),
                    "scale": float(self.scale[j]),
                }
            )
        return out
