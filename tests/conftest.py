"""Shared generated data for the detector tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest


@dataclass(frozen=True)
class PlantedOutliers:
    """Rows on a curved 2-d manifold in 10 dimensions, with planted outliers.

    Every outlier takes each feature's value from a different normal row, so
    its features have exactly the normal rows' marginal distributions; only
    the relations between features give it away. Scores that ignore those
    relations (an untrained autoencoder, random scores) reach an AUC-ROC near
    0.5 on it.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def make_planted_outliers(
    seed: int = 0,
    *,
    n_rows: int = 600,
    n_features: int = 10,
    latent: int = 2,
    outlier_share: float = 0.05,
) -> PlantedOutliers:
    """Half the rows for training (outliers included), half held out."""
    rng = np.random.default_rng(seed)
    n_out = round(outlier_share * n_rows)
    n_normal = n_rows - n_out
    mixing = rng.normal(size=(latent, n_features))
    codes = rng.normal(size=(n_normal, latent))
    normal = np.tanh(codes @ mixing) + 0.05 * rng.normal(size=(n_normal, n_features))
    donors = rng.integers(0, n_normal, size=(n_out, n_features))
    outliers = normal[donors, np.arange(n_features)]
    X = np.vstack([normal, outliers])
    y = np.r_[np.zeros(n_normal, dtype=int), np.ones(n_out, dtype=int)]
    order = rng.permutation(n_rows)
    X, y = X[order], y[order]
    half = n_rows // 2
    return PlantedOutliers(X[:half], y[:half], X[half:], y[half:])


@pytest.fixture(scope="session")
def planted_outliers() -> PlantedOutliers:
    """600 rows (5% outliers) on a 2-d manifold in 10 dimensions, seed 0."""
    return make_planted_outliers(0)


@pytest.fixture(scope="session")
def gaussian_rows() -> np.ndarray:
    """80 rows of 6 independent standard normal features, seed 0 (read-only)."""
    X = np.random.default_rng(0).normal(size=(80, 6))
    X.setflags(write=False)
    return X
