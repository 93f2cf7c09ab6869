"""Save and load a fitted anomaly model without pickle.

A model folder holds ``model.json`` (parameters, architecture, column
encoder, threshold, provenance; for the tuned ensemble, each network's and
each member's) and ``weights.npz`` (every tensor of the scoring module, read
with ``allow_pickle=False``). Loading builds the
module from the JSON and copies the arrays in, so a model file can never
run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anomtune.errors import DataError
from anomtune.files import AtomicFile, make_dirs, replace_dir, write_bytes

__all__ = ["load_model", "replace_dir", "save_model", "write_bytes_atomic", "write_json_atomic"]

FORMAT = "anomtune-model/1"
ENSEMBLE_FORMAT = "anomtune-ensemble/1"


def save_model(model, folder: str | Path, *, meta: dict | None = None) -> Path:
    """Write an :class:`~anomtune.model.AnomalyModel` into ``folder``.

    One autoencoder is written as :data:`FORMAT`; an
    :class:`~anomtune.ensemble.Ensemble` as :data:`ENSEMBLE_FORMAT`, each
    network's document in ``networks`` and every tensor of the ensemble's
    module (networks, spreads, reference residuals) in weights.npz.
    """
    import torch

    from anomtune.ensemble import Ensemble

    detector = model.detector
    folder = Path(folder)
    make_dirs(folder)
    state = {k: v.detach().cpu().numpy() for k, v in detector.module_.state_dict().items()}
    with AtomicFile(folder / "weights.npz") as out:
        np.savez(out.file, **state)
    if isinstance(detector, Ensemble):
        doc = {
            "format": ENSEMBLE_FORMAT,
            "networks": [_network_doc(d) for d in detector.detectors],
            "members": [
                {"network": m.network, "kind": m.kind, "trial": m.trial, "value": m.value}
                for m in detector.members
            ],
            "reference_rows": detector.reference_rows,
            "max_train_error": float(detector.max_train_error_),
        }
    else:
        doc = {"format": FORMAT, **_network_doc(detector)}
    doc.update(
        {
            "threshold": float(detector.threshold_),
            "threshold_rule": detector.threshold_rule_,
            "max_train_score": float(detector.max_train_score_),
            "preprocessor": model.encoder.to_dict(),
            "torch_version": torch.__version__,
            "meta": meta or {},
        }
    )
    write_json_atomic(folder / "model.json", doc)
    return folder


def _network_doc(detector) -> dict:
    """What rebuilds one fitted autoencoder's module (its weights aside)."""
    params = detector.get_params()
    params["hidden_sizes"] = list(params["hidden_sizes"]) if params["hidden_sizes"] else None
    return {
        "params": params,
        "n_features": int(detector.n_features_in_),
        "hidden_sizes": list(detector.hidden_sizes_),
        "latent_dim": int(detector.latent_dim_),
        "seed": int(detector.seed_),
        "n_epochs": int(detector.n_epochs_),
        "training_status": detector.training_status_,
        "threshold": float(detector.threshold_),
        "threshold_rule": detector.threshold_rule_,
        "max_train_score": float(detector.max_train_score_),
    }


def load_model(folder: str | Path):
    """Rebuild ``(AnomalyModel, document)`` from a model folder."""
    import torch

    from anomtune.model import AnomalyModel
    from anomtune.preprocess import InputEncoder

    folder = Path(folder)
    try:
        doc = json.loads((folder / "model.json").read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{folder}: no model.json; not an anomtune model folder") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{folder}/model.json: unreadable: {exc}") from exc
    if doc.get("format") not in (FORMAT, ENSEMBLE_FORMAT):
        raise DataError(f"{folder}: unknown model format {doc.get('format')!r}")
    if not doc.get("preprocessor"):
        raise DataError(f"{folder}/model.json: has no column encoder; cannot score data")
    try:
        with np.load(folder / "weights.npz", allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}/weights.npz: unreadable: {exc}") from exc
    try:
        if doc["format"] == ENSEMBLE_FORMAT:
            detector = _ensemble(doc, state)
        else:
            detector = _network(doc, state)
    except (RuntimeError, KeyError) as exc:
        raise DataError(f"{folder}: weights do not match the architecture: {exc}") from exc
    detector.set_threshold(doc["threshold"], rule=doc["threshold_rule"])
    # Models written before unseen categories were scored have no penalty.
    detector.max_train_score_ = float(doc.get("max_train_score", 0.0))
    return AnomalyModel(InputEncoder.from_dict(doc["preprocessor"]), detector), doc


def _network(doc: dict, state: dict):
    """One fitted autoencoder from its document and module state."""
    import torch

    from anomtune.detector import AutoencoderDetector
    from anomtune.models import ReconstructionScorer
    from anomtune.preprocess import Scaler

    params = dict(doc["params"])
    if params.get("hidden_sizes") is not None:
        params["hidden_sizes"] = tuple(params["hidden_sizes"])
    detector = AutoencoderDetector(**params)
    n_features = int(doc["n_features"])
    net = detector._build_net(n_features, tuple(doc["hidden_sizes"]), int(doc["latent_dim"]))
    scaler = Scaler(params["scaler"])
    scaler.center_ = state["scaler.center"].numpy().astype(np.float32)
    scaler.scale_ = state["scaler.scale"].numpy().astype(np.float32)
    module = ReconstructionScorer(scaler.as_module(), net, score=detector._score_kind())
    module.load_state_dict(state)
    module.eval()
    # The fitted state a call to fit() would have set.
    detector.n_features_in_ = n_features
    detector.scaler_ = scaler
    detector.net_ = net
    detector.module_ = module
    detector.hidden_sizes_ = tuple(doc["hidden_sizes"])
    detector.latent_dim_ = int(doc["latent_dim"])
    detector.device_ = torch.device("cpu")
    detector.seed_ = int(doc["seed"])
    detector.n_epochs_ = int(doc["n_epochs"])
    detector.training_status_ = doc["training_status"]
    detector.set_threshold(doc.get("threshold", np.inf), rule=doc.get("threshold_rule", "none"))
    detector.max_train_score_ = float(doc.get("max_train_score", 0.0))
    return detector


def _ensemble(doc: dict, state: dict):
    """An :class:`~anomtune.ensemble.Ensemble` from its document and module state."""
    from anomtune.ensemble import Ensemble, Member

    detectors = []
    for i, network in enumerate(doc["networks"]):
        prefix = f"scorers.{i}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        detectors.append(_network(network, sub))
    members = [
        Member(int(m["network"]), str(m["kind"]), m.get("trial"), m.get("value"))
        for m in doc["members"]
    ]
    references = {
        int(k[len("reference") :]): v.numpy() for k, v in state.items() if k.startswith("reference")
    }
    ensemble = Ensemble(
        detectors,
        members,
        scale=state["scale"].numpy(),
        references=references,
        reference_rows=int(doc["reference_rows"]),
    )
    ensemble.module_.load_state_dict(state)
    ensemble.max_train_error_ = float(doc.get("max_train_error", 0.0))
    return ensemble


def write_json_atomic(path: str | Path, payload: object) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it (0644)."""
    write_bytes(path, data)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
