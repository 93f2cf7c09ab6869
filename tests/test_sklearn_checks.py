"""scikit-learn's estimator checks on small, fast detectors of every variant."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from anomtune.detector import AutoencoderDetector

DETECTORS = [
    # The default architecture: batch norm, dropout, 64-32-16.
    AutoencoderDetector(epochs=3, random_state=0),
    AutoencoderDetector(variant="vae", vae_score="elbo", epochs=3, width=16, random_state=0),
    AutoencoderDetector(
        variant="contractive", batch_norm=False, epochs=3, width=16, random_state=0
    ),
    AutoencoderDetector(variant="denoising", noise="mask", epochs=3, width=16, random_state=0),
    AutoencoderDetector(
        variant="sparse", sparsity="kl", early_stopping=True, epochs=3, width=16, random_state=0
    ),
    AutoencoderDetector(
        output_activation="sigmoid", scaler="minmax", epochs=3, width=16, random_state=0
    ),
]

# Checks expected to fail, by name, each with the reason. None: every check
# passes (a row's score is computed in float64, so it does not depend on the
# other rows scored with it, which the subset and sample-order checks need).
EXPECTED_FAILURES: dict[str, str] = {}


@parametrize_with_checks(
    DETECTORS, expected_failed_checks=lambda estimator: EXPECTED_FAILURES, xfail_strict=True
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
