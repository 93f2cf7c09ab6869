"""Export a fitted anomaly model to one ONNX graph: raw columns in, answers out.

Inputs
    ``numeric``: float32 ``[N, n_numeric]``, the numeric columns in schema
    order, NaN for a missing value (imputed inside the graph);
    ``categorical``: string ``[N, n_categorical]``, present only when the data
    has categorical columns (encoded inside the graph with the training
    vocabulary; rare, unseen and empty values encode as all zeros, and each
    value the training rows never held adds the training rows' highest score
    to the row's score, see :mod:`anomtune.model`).
Outputs
    ``score``: float32 ``[N]``, the reconstruction error (higher is more
    anomalous); ``feature_errors``: float32 ``[N, n_columns]``, each table
    column's squared reconstruction error on the scaled encoding (a
    categorical column's one-hot block summed back to its column). These are
    errors, not shares: a row's entries sum to ``n_encoded x score`` for the
    reconstruction score (``n_encoded`` is ``architecture.n_encoded_features``
    in the metadata; for ``vae_score="elbo"`` they sum to the ELBO's
    reconstruction term); divide by the row's sum for each column's share, as
    ``anomtune score --explain`` does. ``is_anomaly``: bool ``[N]``,
    ``score > threshold``.

The graph's metadata (key ``anomtune``) carries the schema, threshold and
its rule, metrics, parameters, data fingerprint and anomtune's version.
Export checks onnxruntime against torch on real rows and refuses a graph
whose score or per-column errors differ by more than :data:`RTOL`, each on
its own scale (:func:`check_parity`), or that flips a label.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomtune import __version__
from anomtune.errors import AnomtuneError
from anomtune.preprocess import UNSEEN
from anomtune.scoring import encode_frame

__all__ = ["OPSET", "RTOL", "ExportError", "ParityReport", "export_model", "export_run"]

logger = logging.getLogger(__name__)

OPSET = 18
ML_OPSET = 2
#: Parity tolerance, relative: each output is judged against its own scale
#: (see :func:`check_parity`).
RTOL = 1e-4
#: The absolute floor under both scales: a row the model reconstructs
#: (almost) perfectly is compared absolutely, where relative error means nothing.
ATOL = 1e-7


class ExportError(AnomtuneError):
    """The graph could not be built, or it does not agree with torch."""


_PARITY_RULE = (
    "score: |onnx - torch| <= RTOL * max(|torch score|, ATOL / RTOL) per row "
    "(max(|torch score|, 1) for an ensemble's score, in interquartile-range units); "
    "feature_errors: |onnx - torch| <= RTOL * max(row's total squared error, ATOL / RTOL) "
    "per entry, the total being the row's torch feature_errors summed "
    "(n_encoded_features x score for the reconstruction score); "
    "is_anomaly: no label may differ"
)


@dataclass
class ParityReport:
    """How closely onnxruntime reproduced torch on the checked rows.

    ``score_error`` is the largest score difference relative to the torch
    score; ``feature_error`` the largest per-column difference relative to
    the row's total squared error (see :func:`check_parity`);
    ``max_relative_error`` the larger of the two, the figure held against
    :data:`RTOL`.
    """

    rows: int
    batch_sizes: list[int]
    max_relative_error: float
    label_flips: int
    passed: bool
    score_error: float = 0.0
    feature_error: float = 0.0

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "batch_sizes": self.batch_sizes,
            "optimizations": ["disabled", "all"],
            "max_relative_error": self.max_relative_error,
            "score_relative_error": self.score_error,
            "feature_errors_relative_error": self.feature_error,
            "label_flips": self.label_flips,
            "tolerance": RTOL,
            "absolute_floor": ATOL,
            "rule": _PARITY_RULE,
            "passed": self.passed,
        }


def _graph_module(model):
    """The torch module export traces, and whether it takes categorical codes.

    The model's own :meth:`~anomtune.model.AnomalyModel.module`: the input
    encoder's module followed by the detector's scoring module.
    """
    return model.module(), bool(model.schema.categorical)


def _torch_outputs(module, numeric: np.ndarray, codes: np.ndarray | None):
    import torch

    with torch.no_grad():
        args = [torch.from_numpy(np.array(numeric, dtype=np.float32))]
        if codes is not None:
            args.append(torch.from_numpy(np.array(codes, dtype=np.int64)))
        score, errors, label = module(*args)
    return score.numpy(), errors.numpy(), label.numpy()


def _export_core(module, has_codes: bool, n_numeric: int, n_cat: int):
    """The torch part of the graph as an ``onnx.ModelProto`` (inputs numeric[, codes])."""
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1)
    numeric = torch.zeros((3, n_numeric), dtype=torch.float32)
    args: tuple = (numeric,)
    shapes: dict = {"numeric": {0: batch}}
    names = ["numeric"]
    if has_codes:
        args = (numeric, torch.zeros((3, n_cat), dtype=torch.int64))
        shapes["codes"] = {0: batch}
        names.append("codes")
    else:
        shapes["codes"] = None
    buffer = io.BytesIO()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        stack.callback(exporter_log.setLevel, level)
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=names,
            output_names=["score", "feature_errors", "is_anomaly"],
            dynamic_shapes=shapes if has_codes else {"numeric": {0: batch}},
            external_data=False,
            optimize=True,
            verbose=False,
        )
    program.save(buffer, external_data=False)
    return onnx.load_from_string(buffer.getvalue())


def _add_label_encoders(model, lookups: list[dict[str, int]]):
    """Prepend string-to-code lookups so the graph takes the categorical strings
    (:meth:`~anomtune.preprocess.InputEncoder.lookups`; any other text is
    :data:`~anomtune.preprocess.UNSEEN`)."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    nodes = []
    code_cols = []
    for j, lookup in enumerate(lookups):
        idx = f"anomtune_cat_index_{j}"
        graph.initializer.append(helper.make_tensor(idx, TensorProto.INT64, [1], [j]))
        column = f"anomtune_cat_col_{j}"
        nodes.append(helper.make_node("Gather", ["categorical", idx], [column], axis=1))
        coded = f"anomtune_cat_code_{j}"
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [column],
                [coded],
                domain="ai.onnx.ml",
                keys_strings=list(lookup),
                values_int64s=list(lookup.values()),
                default_int64=UNSEEN,
            )
        )
        code_cols.append(coded)
    nodes.append(helper.make_node("Concat", code_cols, ["codes"], axis=1))
    kept = [i for i in graph.input if i.name != "codes"]
    del graph.input[:]
    graph.input.extend(kept)
    graph.input.append(
        helper.make_tensor_value_info("categorical", TensorProto.STRING, ["batch", len(lookups)])
    )
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    domains = {o.domain: o for o in model.opset_import}
    if "ai.onnx.ml" in domains:
        domains["ai.onnx.ml"].version = max(domains["ai.onnx.ml"].version, ML_OPSET)
    else:
        model.opset_import.append(onnx.helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    return model


def _metadata(model, extra: dict) -> dict:
    from anomtune.ensemble import Ensemble

    detector = model.detector
    schema = model.schema
    ensemble = isinstance(detector, Ensemble)
    # The parameters and architecture shown are the first member's network's.
    network = detector.detectors[detector.members[0].network] if ensemble else detector
    params = network.get_params()
    if params.get("hidden_sizes") is not None:
        params["hidden_sizes"] = list(params["hidden_sizes"])
    if ensemble:
        score = (
            f"mean of {len(detector.members)} scores of {len(detector.detectors)} "
            "autoencoders (reconstruction error, or the distance of the row's residual to the "
            "nearest reference row's), each in units of its reference-row interquartile range"
        )
    else:
        score = "mean squared reconstruction error of the scaled features" + (
            " (negative ELBO for the VAE)" if detector._score_kind() == "elbo" else ""
        )
    architecture = {
        "hidden_sizes": list(network.hidden_sizes_),
        "latent_dim": int(network.latent_dim_),
        "n_encoded_features": int(detector.n_features_in_),
    }
    if ensemble:
        architecture.update(
            networks=len(detector.detectors),
            reference_rows=detector.reference_rows,
            members=detector.describe(),
        )
    return {
        "format": "anomtune-onnx/1",
        "anomtune_version": __version__,
        "schema": schema.to_dict(),
        "inputs": {
            "numeric": schema.numeric,
            "categorical": schema.categorical,
        },
        "outputs": ["score", "feature_errors", "is_anomaly"],
        "feature_names": schema.feature_names,
        "threshold": float(detector.threshold_),
        "threshold_rule": detector.threshold_rule_,
        "score": score,
        "params": params,
        "unseen_categories": {
            "added_score": float(detector.max_train_score_) if schema.categorical else 0.0,
            "rule": "each categorical value no training row held adds the highest "
            "training score to the row's score, and that much error to its column",
        },
        "architecture": architecture,
        **extra,
    }


def _sessions(model_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    out = []
    for level in (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        out.append(ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"]))
    return out


def check_parity(
    model_bytes: bytes, module, feeds: dict, codes: np.ndarray | None, *, score_floor: float = 0.0
) -> ParityReport:
    """Compare onnxruntime with torch at batch sizes 1, 2 and all rows.

    Each output is judged on its own scale, so that float32 rounding (which
    differs between torch's and onnxruntime's kernels) never refuses a
    sound model while a wrong graph still is:

    - ``score``: relative to the row's torch score, ``|onnx - torch| <=
      RTOL * |torch|``, with the absolute floor ``ATOL`` for scores near zero.
    - ``feature_errors``: each entry relative to the row's total squared
      error, the sum of the row's torch ``feature_errors`` (``n_encoded x
      score`` for the reconstruction score; the ELBO's reconstruction term
      for ``vae_score="elbo"``), with the same floor. A column's error
      matters as its part of the row's error: with the score rule this
      keeps every column's share of it (what ``score --explain`` reports)
      within about ``2 x RTOL`` of torch's. Judging each entry on its own
      size instead would demand that a column the model reconstructs almost
      perfectly, whose error is itself a rounding residue near zero, be
      reproduced to ``ATOL`` absolutely, which refused sound models.
    - ``is_anomaly``: no label may differ.

    ``score_floor`` raises the score's floor: an ensemble's score is in
    interquartile-range units, and a score below one such unit is judged to
    ``RTOL`` of the unit.

    The rule is recorded with the result (:meth:`ParityReport.to_dict`).
    """
    n = len(feeds["numeric"])
    ref_score, ref_errors, ref_label = _torch_outputs(module, feeds["numeric"], codes)
    ref_score = ref_score.astype(np.float64)
    ref_errors = ref_errors.astype(np.float64)
    floor = ATOL / RTOL
    score_scale = np.maximum(np.abs(ref_score), max(floor, score_floor))
    row_scale = np.maximum(np.abs(ref_errors).sum(axis=1), floor)[:, None]
    worst_score = worst_feature = 0.0
    flips = 0
    sizes = sorted({1, 2, n} - {0})
    for session in _sessions(model_bytes):
        for size in sizes:
            for start in range(0, n, size):
                rows = slice(start, start + size)
                chunk = {k: v[rows] for k, v in feeds.items()}
                score, errors, label = session.run(None, chunk)
                # A NaN on either side counts as infinitely off.
                diff = np.abs(score.astype(np.float64) - ref_score[rows]) / score_scale[rows]
                worst_score = max(worst_score, float(np.nan_to_num(diff, nan=np.inf).max()))
                diff = np.abs(errors.astype(np.float64) - ref_errors[rows]) / row_scale[rows]
                worst_feature = max(worst_feature, float(np.nan_to_num(diff, nan=np.inf).max()))
                flips += int(np.sum(label.astype(bool) != ref_label[rows]))
                if size == 1 and start >= 64:
                    break  # one-row batches on the first 64 rows are enough
    worst = max(worst_score, worst_feature)
    passed = bool(worst <= RTOL) and flips == 0
    return ParityReport(n, sizes, worst, flips, passed, worst_score, worst_feature)


def export_model(
    model,
    check_frame: pd.DataFrame,
    path: str | Path | None = None,
    *,
    metadata: dict | None = None,
) -> tuple[bytes, ParityReport]:
    """Build, check and (if ``path``) write the ONNX graph of an anomaly model.

    ``check_frame`` holds real rows (with the schema's columns) for the parity
    check. Raises :class:`ExportError` when onnxruntime and torch disagree.
    """
    import onnx

    schema = model.schema
    module, has_codes = _graph_module(model)
    codes = model.encoder.split_inputs(check_frame)[1] if has_codes else None
    meta = _metadata(model, metadata or {})
    try:
        graph = _export_core(module, has_codes, len(schema.numeric), len(schema.categorical))
    except Exception as exc:  # the exporter raises many internal types
        raise ExportError(f"torch could not export the model: {str(exc).splitlines()[0]}") from exc
    if has_codes:
        graph = _add_label_encoders(graph, model.encoder.lookups())
    feeds = encode_frame(check_frame, schema.numeric, schema.categorical)
    if has_codes:
        feeds, codes = _with_unseen_rows(feeds, codes)
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = "anomtune", "{}"
    graph.producer_name = "anomtune"
    graph.producer_version = __version__
    try:
        onnx.checker.check_model(graph, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc
    # An ensemble's score is in units of its members' spread (anomtune.ensemble).
    floor = 1.0 if "members" in meta["architecture"] else 0.0
    report = check_parity(graph.SerializeToString(), module, feeds, codes, score_floor=floor)
    if not report.passed:
        raise ExportError(
            f"onnxruntime disagrees with torch: largest relative difference "
            f"{report.max_relative_error:.3g} (tolerance {RTOL}), {report.label_flips} label "
            "flip(s); the model was not exported"
        )
    meta["parity"] = report.to_dict()
    entry.value = json.dumps(meta, sort_keys=True, default=_json_default)
    data = graph.SerializeToString()
    if path is not None:
        from anomtune.persist import write_bytes_atomic

        write_bytes_atomic(path, data)
    return data, report


def _with_unseen_rows(feeds: dict, codes: np.ndarray) -> tuple[dict, np.ndarray]:
    """The check rows and one more per categorical column: the first row with
    that column's value replaced by one no training row held, so the parity
    check covers the unseen-value rule."""
    n_cat = codes.shape[1]
    numeric = np.repeat(feeds["numeric"][:1], n_cat, axis=0)
    text = np.repeat(feeds["categorical"][:1], n_cat, axis=0).astype(object)
    extra = np.repeat(codes[:1], n_cat, axis=0)
    for j in range(n_cat):
        text[j, j] = "\x00anomtune parity check: a value never seen"
        extra[j, j] = UNSEEN
    return (
        {
            "numeric": np.concatenate([feeds["numeric"], numeric]),
            "categorical": np.concatenate([feeds["categorical"].astype(object), text]),
        },
        np.concatenate([codes, extra]),
    )


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def export_run(run_dir: str | Path, path: str | Path | None = None, *, data=None):
    """Export the best model of a ``tune`` run folder, checked on its validation rows.

    ``data``: the run's data if it has moved, or its table (see
    :meth:`anomtune.run.RunFolder.table`). Returns the graph's bytes and
    what was recorded in its metadata, with the parity report.
    """
    from anomtune.run import RunFolder

    run = RunFolder.open(run_dir)
    summary = run.summary
    if not summary.best:
        raise ExportError(f"{run.path}: the run has no best model to export")
    model = run.model()
    table = run.table(data)
    check_frame = table.features.iloc[run.split(table).val]
    extra = {
        "metrics": summary.metrics,
        "data_fingerprint": summary.fingerprint,
        "lineage": {
            "study": summary.study_name,
            "storage": summary.storage,
            "trial": summary.best["number"],
            "run_dir": str(run.path.resolve()),
            "seed": summary.best["seed"],
        },
        "versions": summary.versions,
    }
    graph, report = export_model(model, check_frame, path, metadata=extra)
    return graph, {"parity": report.to_dict(), **extra}
