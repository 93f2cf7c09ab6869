"""The scikit-learn compatible autoencoder outlier detector."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from anomtune import losses
from anomtune.errors import ConfigError
from anomtune.metrics import quantile_threshold
from anomtune.models import (
    ACTIVATIONS,
    ManualBackprop,
    MLPAutoencoder,
    ReconstructionScorer,
    VariationalAutoencoder,
    backprop,
)
from anomtune.preprocess import SCALERS, Scaler
from anomtune.training import OPTIMIZERS, make_optimizer, run_epochs

__all__ = ["VARIANTS", "AutoencoderDetector"]

logger = logging.getLogger(__name__)

VARIANTS = ("ae", "sparse", "denoising", "contractive", "vae")
_CHOICES = {
    "variant": VARIANTS,
    "activation": tuple(ACTIVATIONS),
    "output_activation": ("identity", "sigmoid"),
    "scaler": SCALERS,
    "sparsity": ("l1", "kl"),
    "noise": ("gaussian", "mask"),
    "vae_score": ("reconstruction", "elbo"),
    "optimizer": OPTIMIZERS,
    "device": ("auto", "cpu", "cuda"),
}
_SCORE_BATCH = 65536
EpochCallback = Callable[[int, "AutoencoderDetector"], object]


class AutoencoderDetector(OutlierMixin, BaseEstimator):
    """Autoencoder anomaly detector: rows that reconstruct badly are anomalies.

    The anomaly score is the reconstruction error of a row in the scaled
    feature space (the mean of the per-feature squared errors; for a VAE
    scored with ``vae_score="elbo"``, the negative ELBO at the posterior
    mean). Higher is more anomalous. A row is an anomaly when its score is
    above ``threshold_``.

    The scikit-learn methods follow scikit-learn's outlier convention:
    ``score_samples`` is the negated anomaly score (higher is more normal),
    ``decision_function`` is ``score_samples - offset_`` (negative for
    anomalies) and ``predict`` returns -1 for anomalies and +1 otherwise.

    Parameters
    ----------
    variant : {"ae", "sparse", "denoising", "contractive", "vae"}
        ``ae`` plain; ``sparse`` with an activity penalty on the code;
        ``denoising`` trained to reconstruct clean rows from corrupted ones;
        ``contractive`` with the encoder-Jacobian penalty; ``vae`` a
        (beta-)variational autoencoder.
    hidden_sizes : sequence of int, optional
        Encoder widths, outermost first; the decoder mirrors them. When not
        given, ``n_layers`` widths starting at ``width`` and multiplied by
        ``shrink`` at each layer.
    n_layers, width, shrink : int, int, float
        The default shape: ``n_layers`` hidden layers of widths
        ``width, width*shrink, ...``.
    latent_dim : int, optional
        Bottleneck size. Default: half the last hidden width (at least 2),
        or half the number of features without hidden layers.
    activation : {"relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"}
    dropout : float
        Dropout after each hidden layer while training. The defaults
        (dropout 0.2 with batch norm, 64-32-16) regularise well on small
        tabular data.
    batch_norm : bool
        Batch normalisation after each hidden layer. The contractive penalty
        is exact only without it (batch norm couples the rows of a batch).
    output_activation : {"identity", "sigmoid"}
        ``sigmoid`` bounds reconstructions to [0, 1]; it trains with binary
        cross-entropy and needs ``scaler="minmax"``.
    scaler : {"standard", "robust", "minmax", "none"}
        Feature scaling, fitted on the training rows.
    sparsity : {"l1", "kl"}
        For ``sparse``: L1 activity penalty, or KL divergence from a target
        firing rate.
    sparsity_weight : float
        Weight of the sparsity penalty (lambda for L1, beta for KL).
    sparsity_target : float
        Target firing rate rho of the KL penalty.
    noise : {"gaussian", "mask"}
        For ``denoising``: additive Gaussian noise or masking noise.
    noise_level : float
        Standard deviation of the Gaussian noise, or masking probability.
    contractive_weight : float
        For ``contractive``: weight of the squared Frobenius norm of the
        encoder's Jacobian.
    beta : float
        For ``vae``: weight of the KL term (1 is the plain VAE).
    vae_score : {"reconstruction", "elbo"}
        For ``vae``: score by reconstruction error at the posterior mean or by
        the negative ELBO at the posterior mean.
    optimizer : {"adam", "adamw", "rmsprop", "sgd"}
    learning_rate : float
    momentum : float
        Momentum of ``sgd`` and ``rmsprop``.
    weight_decay : float
    batch_size : int
        Larger than the data means full-batch training.
    epochs : int
        The most epochs to train.
    early_stopping : bool
        Hold out ``validation_fraction`` of the training rows and stop when
        their reconstruction error has not improved for ``patience`` epochs,
        keeping the best weights.
    validation_fraction : float
    patience : int
    contamination : float
        Share of training rows above the initial threshold, in (0, 0.5].
        Replace the threshold with :meth:`set_threshold` (the tuner sets the
        one that maximises F1 on labeled validation rows).
    device : {"auto", "cpu", "cuda"}
        ``auto`` trains on CUDA when torch sees a GPU.
    random_state : int, RandomState instance or None
        Seeds weight initialisation, shuffling, dropout and noise. The same
        seed gives the same scores; the global torch seed is left untouched.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Present when fitted on a DataFrame with string column names.
    threshold_ : float
        Anomaly-score threshold: rows scoring above it are anomalies.
    offset_ : float
        ``-threshold_``, in scikit-learn's convention.
    threshold_rule_ : str
    max_train_score_ : float
        The highest anomaly score on the training rows (0 if not finite).
    module_ : torch.nn.Module
        Raw features to ``(score, per-feature errors)``; what export traces.
    scaler_ : Scaler
    hidden_sizes_ : tuple of int
    latent_dim_ : int
    n_epochs_ : int
        Epochs actually trained.
    training_status_ : str
        ``completed``, ``early_stopped``, ``stopped_by_callback`` or ``diverged``.
    loss_curve_ : list of float
    seed_ : int
        The seed training used.

    Notes
    -----
    Training and scoring run torch on one CPU thread and restore the thread
    count afterwards: tabular batches are too small for intra-op threads to
    pay, and threads waiting for busy cores slow parallel tuning workers down
    many times over. Scores are computed in float64, so that a row's score
    does not depend on the other rows scored with it; ``module_`` itself is
    float32 and agrees with them to float32 rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from anomtune import AutoencoderDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4))
    >>> det = AutoencoderDetector(epochs=5, random_state=0).fit(X)
    >>> det.anomaly_score(X[:3]).shape
    (3,)
    >>> int(det.predict(X).tolist().count(-1))
    20
    """

    def __init__(
        self,
        *,
        variant: str = "ae",
        hidden_sizes: Sequence[int] | None = None,
        n_layers: int = 2,
        width: int = 64,
        shrink: float = 0.5,
        latent_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.2,
        batch_norm: bool = True,
        output_activation: str = "identity",
        scaler: str = "standard",
        sparsity: str = "l1",
        sparsity_weight: float = 1e-3,
        sparsity_target: float = 0.05,
        noise: str = "gaussian",
        noise_level: float = 0.2,
        contractive_weight: float = 1e-3,
        beta: float = 1.0,
        vae_score: str = "reconstruction",
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        epochs: int = 50,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 10,
        contamination: float = 0.1,
        device: str = "auto",
        random_state=None,
    ):
        self.variant = variant
        self.hidden_sizes = hidden_sizes
        self.n_layers = n_layers
        self.width = width
        self.shrink = shrink
        self.latent_dim = latent_dim
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.output_activation = output_activation
        self.scaler = scaler
        self.sparsity = sparsity
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.noise = noise
        self.noise_level = noise_level
        self.contractive_weight = contractive_weight
        self.beta = beta
        self.vae_score = vae_score
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.contamination = contamination
        self.device = device
        self.random_state = random_state

    # -- parameters ---------------------------------------------------------

    def _check_params(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}"
                )
        _positive_int(self, "n_layers", minimum=0)
        _positive_int(self, "width")
        _positive_int(self, "batch_size")
        _positive_int(self, "epochs")
        _positive_int(self, "patience")
        if self.latent_dim is not None:
            _positive_int(self, "latent_dim")
        if self.hidden_sizes is not None:
            sizes = self.hidden_sizes
            if (
                isinstance(sizes, (str, bytes))
                or not isinstance(sizes, Sequence | np.ndarray)
                or not all(
                    isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
                )
            ):
                raise ConfigError(
                    f"hidden_sizes must be a sequence of positive integers, not {sizes!r}"
                )
        for name in ("batch_norm", "early_stopping"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ConfigError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.batch_norm and self.batch_size == 1:
            raise ConfigError(
                "batch_size=1 cannot be used with batch_norm=True: batch norm needs at least "
                "2 rows per batch"
            )
        _real_in(self, "shrink", 0.0, 1.0, low_open=True)
        _real_in(self, "dropout", 0.0, 1.0, high_open=True)
        _real_in(self, "contamination", 0.0, 0.5, low_open=True)
        _real_in(self, "validation_fraction", 0.0, 1.0, low_open=True, high_open=True)
        _real_in(self, "sparsity_target", 0.0, 1.0, low_open=True, high_open=True)
        _real_in(self, "learning_rate", 0.0, math.inf, low_open=True)
        _real_in(self, "momentum", 0.0, 1.0, high_open=True)
        for name in ("weight_decay", "sparsity_weight", "contractive_weight", "beta"):
            _real_in(self, name, 0.0, math.inf)
        if self.noise == "mask":
            _real_in(self, "noise_level", 0.0, 1.0, high_open=True)
        else:
            _real_in(self, "noise_level", 0.0, math.inf)
        if self.output_activation == "sigmoid" and self.scaler != "minmax":
            raise ConfigError(
                "output_activation='sigmoid' reconstructs values in [0, 1]; "
                "it needs scaler='minmax'"
            )
        backprop.training_path()  # an unknown ANOMTUNE_TRAINING is refused before fitting

    def _architecture(self, n_features: int) -> tuple[tuple[int, ...], int]:
        if self.hidden_sizes is not None:
            hidden = tuple(int(s) for s in self.hidden_sizes)
        else:
            hidden = tuple(max(1, round(self.width * self.shrink**i)) for i in range(self.n_layers))
        if self.latent_dim is not None:
            latent = int(self.latent_dim)
        elif hidden:
            latent = max(2, hidden[-1] // 2)
        else:
            latent = max(2, n_features // 2)
        return hidden, latent

    def _resolve_device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' but torch sees no CUDA device")
        if self.device in ("cuda", "auto") and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    # -- fitting ------------------------------------------------------------

    def fit(self, X, y=None, *, epoch_callback: EpochCallback | None = None):
        """Fit the autoencoder on the rows of ``X`` (``y`` is ignored).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric training rows, without missing or infinite values.
        y : ignored
        epoch_callback : callable, optional
            Called as ``epoch_callback(epoch, self)`` after every epoch
            (``epoch`` counts from 1). The detector can already score then.
            A true return value stops training; an exception propagates.
        """
        self._check_params()
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=1)
        try:
            rng = check_random_state(self.random_state)
        except ValueError:
            raise ConfigError(
                "random_state must be None, an integer or a numpy RandomState, "
                f"not {self.random_state!r}"
            ) from None
        seed = int(rng.randint(np.iinfo(np.int32).max))
        device = self._resolve_device()
        hidden, latent = self._architecture(X.shape[1])

        scaler = Scaler(self.scaler).fit(X)
        Xs = torch.from_numpy(scaler.transform(X)).to(device)
        holdout = None
        if self.early_stopping and X.shape[0] >= 10:
            order = np.random.default_rng(seed).permutation(X.shape[0])
            # At least one row on each side, whatever the fraction.
            n_hold = min(X.shape[0] - 1, max(1, round(self.validation_fraction * X.shape[0])))
            holdout = Xs[torch.from_numpy(order[:n_hold]).to(device)]
            Xs = Xs[torch.from_numpy(order[n_hold:]).to(device)]

        # Weight initialisation (on the CPU) and dropout draw from torch's global
        # generators, so they are seeded inside a fork that restores them on exit.
        # torch.manual_seed would also reseed CUDA generators outside the fork.
        fork_devices = []
        if device.type == "cuda":
            fork_devices = [
                device.index if device.index is not None else torch.cuda.current_device()
            ]
        with _one_cpu_thread(device), torch.random.fork_rng(devices=fork_devices):
            torch.random.default_generator.manual_seed(seed)
            for index in fork_devices:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            net = self._build_net(X.shape[1], hidden, latent).to(device)
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            self.scaler_ = scaler
            self.net_ = net
            self.module_ = ReconstructionScorer(
                scaler.as_module(), net, score=self._score_kind()
            ).to(device)
            self.module_.eval()
            self.hidden_sizes_ = hidden
            self.latent_dim_ = latent
            self.device_ = device
            self.seed_ = seed
            self.threshold_ = math.inf
            self.offset_ = -math.inf
            self.threshold_rule_ = "unset"
            self.max_train_score_ = 0.0

            scorer = self.module_
            optimizer = make_optimizer(
                self.optimizer,
                net.parameters(),
                lr=self.learning_rate,
                weight_decay=self.weight_decay,
                momentum=self.momentum,
            )

            manual = self._manual_backprop(net)

            def batch_loss(xb):
                return self._batch_loss(net, xb, generator, manual)

            def holdout_loss():
                with torch.no_grad():
                    return float(scorer.forward_scaled(holdout)[0].mean())

            callback = None
            if epoch_callback is not None:

                def callback(epoch):
                    return epoch_callback(epoch, self)

            result = run_epochs(
                net,
                Xs,
                batch_loss,
                optimizer=optimizer,
                epochs=self.epochs,
                batch_size=self.batch_size,
                generator=generator,
                holdout_loss=holdout_loss if holdout is not None else None,
                patience=self.patience,
                on_epoch_end=callback,
            )
        self.training_ = result
        self.n_epochs_ = result.epochs
        self.training_status_ = result.status
        self.loss_curve_ = list(result.loss_curve)
        self._settle(X)
        return self

    def restore(self, state: dict, X, *, epoch: int) -> AutoencoderDetector:
        """Go back to the weights ``state`` (a ``net_.state_dict()`` copy taken after
        epoch ``epoch``), and recompute what fit derives from the training rows ``X``."""
        self.net_.load_state_dict(state)
        self.module_.eval()
        self.n_epochs_ = int(epoch)
        return self.settle(X)

    def settle(self, X) -> AutoencoderDetector:
        """Recompute what fit derives from the training rows ``X`` (the unseen-value
        weight and the contamination threshold) for the current weights: for a
        network trained on a sample of ``X``, the figures of all of it."""
        self._settle(validate_data(self, X, dtype=np.float32, reset=False))
        return self

    def _settle(self, X) -> None:
        """The training-score figures of the current weights: the unseen-value
        weight and the contamination threshold."""
        train_scores = self.anomaly_score(X)
        finite = np.isfinite(train_scores).all()
        # What a categorical value never seen in training adds to a row's
        # score (anomtune.model.unseen_penalty): the row outranks every
        # training row.
        self.max_train_score_ = float(train_scores.max()) if finite and len(X) else 0.0
        if finite:
            self.set_threshold(
                quantile_threshold(train_scores, self.contamination),
                rule=f"training-score quantile at contamination={self.contamination}",
            )
        else:
            self.set_threshold(math.inf, rule="none: training scores are not finite")

    def _score_kind(self) -> str:
        return "elbo" if self.variant == "vae" and self.vae_score == "elbo" else "reconstruction"

    def _build_net(self, n_features: int, hidden, latent):
        common = dict(
            activation=self.activation,
            dropout=float(self.dropout),
            batch_norm=bool(self.batch_norm),
            output_activation=self.output_activation,
        )
        if self.variant == "vae":
            return VariationalAutoencoder(n_features, hidden, latent, beta=self.beta, **common)
        return MLPAutoencoder(n_features, hidden, latent, **common)

    def _manual_backprop(self, net) -> ManualBackprop | None:
        """The hand-written training step, for the networks and losses it covers,
        unless ``ANOMTUNE_TRAINING=autograd``."""
        if self.variant in ("ae", "denoising"):
            l1_weight = 0.0
        elif self.variant == "sparse" and self.sparsity == "l1":
            l1_weight = float(self.sparsity_weight)
        else:
            return None
        return backprop.for_training(
            net, output_activation=self.output_activation, l1_weight=l1_weight
        )

    def _batch_loss(
        self,
        net,
        xb: torch.Tensor,
        generator: torch.Generator,
        manual: ManualBackprop | None = None,
    ):
        """The batch's loss: a tensor, or the hand-written step's pending loss."""
        if manual is not None:
            inputs = xb
            if self.variant == "denoising":
                inputs = losses.corrupt(xb, self.noise, self.noise_level, generator)
            return manual.loss(inputs, xb)
        kind = "bce" if self.output_activation == "sigmoid" else "mse"
        if self.variant == "vae":
            recon, mu, logvar = net(xb, generator)
            per_row = losses.reconstruction_per_row(recon, xb, kind)
            return (per_row + self.beta * losses.gaussian_kl_per_row(mu, logvar)).mean()
        inputs = xb
        if self.variant == "denoising":
            inputs = losses.corrupt(xb, self.noise, self.noise_level, generator)
        elif self.variant == "contractive":
            # The Jacobian is taken on the same forward pass as the reconstruction,
            # so it sees the same dropout mask and batch norm updates its
            # statistics once per batch.
            inputs = xb.detach().requires_grad_(True)
        recon, code = net(inputs)
        loss = losses.reconstruction_per_row(recon, xb, kind).mean() / xb.shape[1]
        if self.variant == "sparse":
            if self.sparsity == "kl":
                penalty = losses.kl_sparsity(code, self.sparsity_target)
            else:
                penalty = losses.l1_activity(code)
            loss = loss + self.sparsity_weight * penalty
        elif self.variant == "contractive":
            loss = loss + self.contractive_weight * losses.jacobian_penalty(code, inputs)
        return loss

    # -- thresholds ---------------------------------------------------------

    def set_threshold(self, threshold: float, *, rule: str = "user") -> AutoencoderDetector:
        """Set the anomaly-score threshold (rows scoring above it are anomalies).

        ``math.inf`` flags no row; ``-math.inf`` flags every row. Returns ``self``.
        """
        if (
            not isinstance(threshold, Real)
            or isinstance(threshold, bool)
            or math.isnan(float(threshold))
        ):
            raise ConfigError(f"threshold must be a number (not NaN), not {threshold!r}")
        self.threshold_ = float(threshold)
        self.offset_ = -self.threshold_
        self.threshold_rule_ = rule
        return self

    # -- scoring ------------------------------------------------------------

    def _forward(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        module = self.module_
        module.eval()
        # Scoring runs in float64. In float32, a row's score depends on how many
        # rows share its matrix product (the kernels round differently), so the
        # same row could score differently alone and within a larger set.
        state = {
            name: t.double() if t.is_floating_point() else t
            for name, t in chain(module.named_parameters(), module.named_buffers())
        }
        scores = np.empty(X.shape[0], dtype=np.float64)
        errors = np.empty(X.shape, dtype=np.float64)
        with _one_cpu_thread(self.device_), torch.no_grad():
            for start in range(0, X.shape[0], _SCORE_BATCH):
                chunk = X[start : start + _SCORE_BATCH]
                x = torch.from_numpy(chunk).to(self.device_, torch.float64)
                s, e = torch.func.functional_call(module, state, (x,))
                scores[start : start + len(chunk)] = s.cpu().numpy()
                errors[start : start + len(chunk)] = e.cpu().numpy()
        return scores, errors

    def anomaly_score(self, X) -> np.ndarray:
        """Reconstruction-error score per row; higher is more anomalous."""
        return self._forward(X)[0]

    def feature_errors(self, X) -> np.ndarray:
        """Per-feature squared reconstruction error, shape (n_samples, n_features)."""
        return self._forward(X)[1]

    def score_samples(self, X) -> np.ndarray:
        """Negated anomaly score: higher is more normal (scikit-learn convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for anomalies."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """-1 for anomalies (score above ``threshold_``), +1 for normal rows.

        The same as ``decision_function(X) < 0``, without the NaN that an
        infinite score minus an infinite threshold would give there.
        """
        return np.where(self.anomaly_score(X) > self.threshold_, -1, 1)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU operations on one thread, then restore the thread count.

    The batches of a tabular autoencoder are too small for intra-op threads to
    pay: each batch-norm or linear call waits for every thread, and when other
    processes (parallel tuning workers, other tests) keep the cores busy that
    wait makes training and scoring tens of times slower. One thread also makes
    the trained weights independent of the machine's core count. Scoring at
    scale belongs to the exported ONNX model, which has its own threads.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _positive_int(est, name: str, minimum: int = 1) -> None:
    value = getattr(est, name)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _real_in(
    est, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    value = getattr(est, name)
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (
            v < high if high_open else v <= high or math.isinf(high)
        )
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"{name} must be a number in {lo}{low}, {high}{hi}, not {value!r}")
