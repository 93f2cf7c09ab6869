"""Save and load a fitted anomaly model without pickle.

A model folder holds ``model.json`` (parameters, architecture, column
encoder, threshold, provenance) and ``weights.npz`` (every tensor of the
scoring module, read with ``allow_pickle=False``). Loading builds the
module from the JSON and copies the arrays in, so a model file can never
run code.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from anomtune.errors import DataError

__all__ = ["load_model", "replace_dir", "save_model", "write_bytes_atomic", "write_json_atomic"]

FORMAT = "anomtune-model/1"


def save_model(model, folder: str | Path, *, meta: dict | None = None) -> Path:
    """Write an :class:`~anomtune.model.AnomalyModel` into ``folder``."""
    import torch

    detector = model.detector
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in detector.module_.state_dict().items()}
    with open(folder / "weights.npz", "wb") as fh:
        np.savez(fh, **state)
    params = detector.get_params()
    params["hidden_sizes"] = list(params["hidden_sizes"]) if params["hidden_sizes"] else None
    doc = {
        "format": FORMAT,
        "params": params,
        "n_features": int(detector.n_features_in_),
        "hidden_sizes": list(detector.hidden_sizes_),
        "latent_dim": int(detector.latent_dim_),
        "seed": int(detector.seed_),
        "threshold": float(detector.threshold_),
        "threshold_rule": detector.threshold_rule_,
        "n_epochs": int(detector.n_epochs_),
        "training_status": detector.training_status_,
        "preprocessor": model.encoder.to_dict(),
        "torch_version": torch.__version__,
        "meta": meta or {},
    }
    write_json_atomic(folder / "model.json", doc)
    return folder


def load_model(folder: str | Path):
    """Rebuild ``(AnomalyModel, document)`` from a model folder."""
    import torch

    from anomtune.detector import AutoencoderDetector
    from anomtune.model import AnomalyModel
    from anomtune.models import ReconstructionScorer
    from anomtune.preprocess import InputEncoder, Scaler

    folder = Path(folder)
    try:
        doc = json.loads((folder / "model.json").read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{folder}: no model.json; not an anomtune model folder") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{folder}/model.json: unreadable: {exc}") from exc
    if doc.get("format") != FORMAT:
        raise DataError(f"{folder}: unknown model format {doc.get('format')!r}")
    if not doc.get("preprocessor"):
        raise DataError(f"{folder}/model.json: has no column encoder; cannot score data")
    try:
        with np.load(folder / "weights.npz", allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}/weights.npz: unreadable: {exc}") from exc

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
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{folder}: weights do not match the architecture: {exc}") from exc
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
    detector.set_threshold(doc["threshold"], rule=doc["threshold_rule"])
    return AnomalyModel(InputEncoder.from_dict(doc["preprocessor"]), detector), doc


def write_json_atomic(path: str | Path, payload: object) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(staged: Path, target: Path) -> None:
    """Move a fully written folder into place, replacing an older one.

    On Linux the two folders swap places in one atomic rename
    (``renameat2`` with ``RENAME_EXCHANGE``), so ``target`` always names a
    complete folder, the old one or the new one, even if the process dies
    in between. Elsewhere, or on a file system without the exchange, the old
    folder is first renamed aside (``.NAME.old-PID``) and removed afterwards.
    """
    staged, target = Path(staged), Path(target)
    if target.exists() and _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2``; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


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
