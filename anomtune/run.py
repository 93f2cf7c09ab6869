"""The run folder ``anomtune tune`` writes, as a declared, versioned format.

A run folder holds::

    summary.json   the RunSummary (format "anomtune-run/1")
    trials.csv     one row per trial: number, state, value(s), epochs, seed, params_*
    space.toml     the search space the trials were sampled from
    model/         the refitted best model (anomtune.persist), when a trial completed

Every reader and writer goes through :class:`RunFolder`: the export, the
report, ``anomtune tune --register``, ``--enqueue RUN`` and
``anomtune space --refine``. Summaries written before the format was
declared (no ``format`` key) have the same keys and are read as version 1.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from anomtune.errors import ConfigError, DataError
from anomtune.files import staging_folder

__all__ = ["FORMAT", "RunFolder", "RunSummary", "TrialRecord"]

FORMAT = "anomtune-run/1"
# Keys a summary has whatever happened in the run.
_REQUIRED = ("config", "data", "split", "study")


@dataclass
class RunSummary:
    """What ``summary.json`` holds: the settings, data, split, study and best model.

    The nested sections stay dicts with the keys they have always had; the
    properties name what readers use.
    """

    config: dict
    data: dict
    split: dict
    study: dict
    #: The roles table of the data: every column, its role and why (anomtune.inputs).
    columns: list = field(default_factory=list)
    #: One line each on what reading the data inferred or dropped.
    notes: list = field(default_factory=list)
    seed: int = 0
    train_on: str = "normal"
    cv: int | None = None
    space: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    command: list[str] | None = None
    anomtune_version: str | None = None
    interrupted: bool = False
    timings: dict = field(default_factory=dict)
    best: dict | None = None
    # Present only when a trial completed:
    metrics: dict | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    refit: dict | None = None
    # Present only for some runs:
    pareto_front: list | None = None
    best_rule: str | None = None
    note: str | None = None
    workers: dict | None = None
    registered: dict | None = None
    #: The rows the trials and the refit trained on (``--trial-rows``).
    fidelity: dict | None = None
    #: The best value so far after each finished trial (anomtune.tuning.anytime).
    anytime: dict | None = None
    #: The shipped ensemble's members and validation value (anomtune.ensemble).
    ensemble: dict | None = None
    format: str = FORMAT

    _OPTIONAL = (
        "metrics",
        "threshold",
        "threshold_rule",
        "refit",
        "pareto_front",
        "best_rule",
        "note",
        "workers",
        "registered",
        "fidelity",
        "anytime",
        "ensemble",
    )

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    @property
    def study_name(self) -> str:
        return self.study["name"]

    @property
    def storage(self) -> str | None:
        return self.study.get("storage")

    @property
    def directions(self) -> list[str]:
        return self.study.get("directions") or ["maximize"]

    @property
    def maximize(self) -> bool:
        """Whether the first objective is maximised (False: a loss without labels)."""
        return self.directions[0] == "maximize"

    def to_dict(self) -> dict:
        doc = asdict(self)
        for key in self._OPTIONAL:
            if doc[key] is None:
                del doc[key]
        return doc

    @classmethod
    def from_dict(cls, doc: object, where: str = "summary.json") -> RunSummary:
        if not isinstance(doc, dict) or any(k not in doc for k in _REQUIRED):
            raise DataError(f"{where}: not an anomtune run summary")
        fmt = doc.get("format", FORMAT)
        if fmt != FORMAT:
            raise DataError(
                f"{where}: run format {fmt!r}, but this anomtune reads {FORMAT!r}; "
                "use the anomtune version that wrote the run"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass
class TrialRecord:
    """One row of ``trials.csv``; parameters as the text the file holds."""

    number: int
    state: str
    value: float | None
    params: dict[str, str]

    def typed_params(self, space) -> dict:
        """The parameters as ``space`` types them (text a choice does not match is left out)."""
        out = {}
        for p in space.params:
            raw = self.params.get(p.name, "")
            if raw == "":
                continue
            if p.type == "categorical":
                match = [c for c in p.choices if str(c) == raw]
                if match:
                    out[p.name] = match[0]
            elif p.type == "int":
                out[p.name] = int(float(raw))
            elif p.type == "float":
                out[p.name] = float(raw)
        return out


class RunFolder:
    """A run folder on disk; :meth:`open` reads and checks its summary."""

    def __init__(self, path: str | Path, summary: RunSummary):
        self.path = Path(path)
        self.summary = summary

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: not a run folder (no such folder)")
        if not path.is_dir():
            raise ConfigError(f"{path}: not a folder; give the run folder 'anomtune tune' wrote")
        where = path / "summary.json"
        try:
            doc = json.loads(where.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: not a run folder (no summary.json)") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is one
            raise DataError(f"{where}: not valid JSON ({exc})") from exc
        return cls(path, RunSummary.from_dict(doc, str(where)))

    # -- the model and the data -------------------------------------------------

    def model(self):
        """The refitted best model, as an :class:`~anomtune.model.AnomalyModel`."""
        from anomtune.persist import load_model

        if not self.summary.best:
            raise ConfigError(f"{self.path}: the run has no best model (no trial completed)")
        if not (self.path / "model").is_dir():
            raise DataError(f"{self.path}: the run has a best trial but no model/ folder")
        return load_model(self.path / "model")[0]

    def table(self, data=None):
        """The run's data as a :class:`~anomtune.data.Table`, refused if its
        fingerprint is not the one recorded.

        ``data``: the data file if it has moved, or the table itself (a run
        tuned on a DataFrame has no file to read again).
        """
        from anomtune.data import ReadOptions, Table, read_table

        if isinstance(data, Table):
            table, path = data, data.source or "the given table"
        else:
            path = str(data) if data is not None else self.summary.config.get("data")
            if not path or path == "-":
                raise ConfigError(
                    "the run read its data from standard input; give the data file with --data"
                )
            if not Path(path).is_file():
                raise ConfigError(
                    f"the run's data file {path} is not there; give its current path with --data"
                )
            table = read_table(path, ReadOptions.of(self.summary.config))
        recorded = self.summary.fingerprint
        if table.fingerprint != recorded:
            raise DataError(
                f"{path} is not the data the run was tuned on: its fingerprint differs "
                f"({table.fingerprint[:19]}..., the run recorded {str(recorded)[:19]}...)"
            )
        return table

    def split(self, table):
        """The run's seeded train/validation/test split of ``table``."""
        from anomtune.pipeline import split_table

        split = self.summary.split
        return split_table(
            table,
            seed=int(split["seed"]),
            val_size=float(split.get("val_size", 0.2)),
            test_size=float(split.get("test_size", 0.2)),
        )

    # -- the search -------------------------------------------------------------

    def trials(self) -> list[TrialRecord]:
        """The rows of ``trials.csv`` (none if the file is missing)."""
        where = self.path / "trials.csv"
        try:
            with open(where, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except FileNotFoundError:
            return []
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: unreadable: {exc}") from exc
        out = []
        for row in rows:
            try:
                number = int(row["number"])
                value = float(row["value"]) if row.get("value") else None
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"{where}: not a trials table: {exc}") from exc
            params = {
                k.removeprefix("params_"): v
                for k, v in row.items()
                if k and k.startswith("params_") and v not in ("", None)
            }
            out.append(TrialRecord(number, row.get("state") or "", value, params))
        return out

    def space(self):
        """The search space the run sampled from."""
        from anomtune.space import load_space

        where = self.path / "space.toml"
        if not where.is_file():
            raise ConfigError(f"{self.path}: not a run folder (no space.toml)")
        return load_space(where)

    def best_params(self) -> dict:
        """The best trial's parameters as the sampler saw them (for ``--enqueue``)."""
        best = self.summary.best or {}
        params = best.get("tuned_params") or best.get("params")
        if not params:
            raise ConfigError(f"{self.path}: the run has no best trial")
        return dict(params)

    # -- writing ----------------------------------------------------------------

    def record_registration(self, registered: dict) -> None:
        """Note in the summary where the best model was registered."""
        self.summary.registered = registered
        self._write_summary(self.path)

    def _write_summary(self, folder: Path) -> None:
        from anomtune.persist import write_json_atomic

        write_json_atomic(folder / "summary.json", self.summary.to_dict())

    @classmethod
    def write(
        cls,
        path: str | Path,
        summary: RunSummary,
        *,
        trial_rows: list[dict],
        space_toml: str,
        model=None,
    ) -> RunFolder:
        """Write a whole run folder, replacing any older one at ``path`` in one step."""
        from anomtune.persist import replace_dir, save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = staging_folder(path)
        run = cls(path, summary)
        try:
            if model is not None:
                save_model(
                    model,
                    staged / "model",
                    meta={
                        "data_fingerprint": summary.fingerprint,
                        "study": summary.study_name,
                        "trial": summary.best["number"],
                        "metrics": summary.metrics,
                    },
                )
            columns: list[str] = []
            for row in trial_rows:
                columns.extend(k for k in row if k not in columns)
            with open(staged / "trials.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(trial_rows)
            (staged / "space.toml").write_text(space_toml)
            run._write_summary(staged)
            replace_dir(staged, path)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return run
