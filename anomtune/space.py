"""Search spaces: which detector parameters a study tunes, over what ranges.

A space is an ordered list of :class:`Param`. Each is categorical (a list of
``choices``), an int or float range (``low``, ``high``, optionally ``log``
or ``step``) or fixed (``value``). A ``when`` condition makes a parameter
exist only for some values of earlier ones (the sparsity weight only for the
sparse variant). ``grid`` lists the values grid search tries.

Spaces are read from and written to TOML::

    [learning_rate]
    type = "float"
    low = 0.0001
    high = 0.01
    log = true
    grid = [0.001, 0.003]

    [sparsity_weight]
    when = { variant = ["sparse"] }
    ...
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from anomtune.errors import ConfigError

__all__ = ["Param", "SearchSpace", "default_space", "load_space", "narrow", "top_quartile"]

CATEGORICAL = "categorical"
INT = "int"
FLOAT = "float"
FIXED = "fixed"
_KEYS = {"type", "choices", "low", "high", "log", "step", "value", "when", "grid", "help"}


@dataclass(frozen=True)
class Param:
    """One tunable (or fixed) detector parameter."""

    name: str
    type: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    value: object = None
    when: Mapping[str, tuple] = field(default_factory=dict)
    grid: tuple = ()
    help: str = ""

    def active(self, chosen: Mapping[str, object]) -> bool:
        """Whether this parameter exists given the values chosen before it."""
        return all(
            name in chosen and chosen[name] in allowed for name, allowed in self.when.items()
        )

    def suggest(self, trial) -> object:
        """Draw a value from an Optuna trial (or a FixedTrial)."""
        if self.type == FIXED:
            return self.value
        if self.type == CATEGORICAL:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == INT:
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.name, float(self.low), float(self.high), step=self.step, log=self.log
        )

    def grid_values(self) -> tuple:
        if self.grid:
            return self.grid
        if self.type == FIXED:
            return (self.value,)
        if self.type == CATEGORICAL:
            return self.choices
        raise ConfigError(
            f"search space: {self.name!r} is a range; grid search needs its values as "
            f"'grid = [...]'"
        )

    def to_toml(self) -> str:
        lines = [f"[{self.name}]"]
        if self.help:
            lines.insert(0, f"# {self.help}")
        if self.when:
            inner = ", ".join(f"{k} = {_toml_value(list(v))}" for k, v in self.when.items())
            lines.append(f"when = {{ {inner} }}")
        if self.type == FIXED:
            lines.append(f"value = {_toml_value(self.value)}")
        else:
            lines.append(f'type = "{self.type}"')
            if self.type == CATEGORICAL:
                lines.append(f"choices = {_toml_value(list(self.choices))}")
            else:
                lines.append(f"low = {_toml_value(self.low)}")
                lines.append(f"high = {_toml_value(self.high)}")
                if self.log:
                    lines.append("log = true")
                if self.step is not None:
                    lines.append(f"step = {_toml_value(self.step)}")
        if self.grid:
            lines.append(f"grid = {_toml_value(list(self.grid))}")
        return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


@dataclass(frozen=True)
class SearchSpace:
    """An ordered collection of :class:`Param`."""

    params: tuple[Param, ...]

    def __post_init__(self):
        seen: set[str] = set()
        for p in self.params:
            for cond in p.when:
                if cond not in seen:
                    raise ConfigError(
                        f"search space: {p.name!r} depends on {cond!r}, which must come before it"
                    )
            seen.add(p.name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def sample(self, trial) -> dict:
        """Detector parameters for one trial, following the conditions."""
        chosen: dict = {}
        for p in self.params:
            if p.active(chosen):
                chosen[p.name] = p.suggest(trial)
        return chosen

    def distributions(self) -> dict:
        """Optuna distributions of the tunable parameters (for enqueue checks)."""
        import optuna

        out = {}
        for p in self.params:
            if p.type == CATEGORICAL:
                out[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
            elif p.type == INT:
                out[p.name] = optuna.distributions.IntDistribution(
                    int(p.low), int(p.high), log=p.log, step=int(p.step or 1)
                )
            elif p.type == FLOAT:
                out[p.name] = optuna.distributions.FloatDistribution(
                    float(p.low), float(p.high), log=p.log, step=p.step
                )
        return out

    def grid(self) -> list[dict]:
        """Every distinct combination grid search runs, conditions applied."""
        combos: list[dict] = [{}]
        for p in self.params:
            grown = []
            for combo in combos:
                if p.active(combo):
                    grown.extend({**combo, p.name: v} for v in p.grid_values())
                else:
                    grown.append(combo)
            combos = grown
        unique = {json.dumps(c, sort_keys=True, default=str): c for c in combos}
        return list(unique.values())

    def tunable(self, params: Mapping[str, object]) -> dict:
        """The entries of ``params`` an Optuna trial would suggest (not fixed ones)."""
        kinds = {p.name: p.type for p in self.params}
        return {k: v for k, v in params.items() if kinds.get(k) not in (None, FIXED)}

    def with_overrides(self, other: Mapping[str, Mapping]) -> SearchSpace:
        """This space with entries replaced or added from a parsed TOML mapping."""
        params = list(self.params)
        index = {p.name: i for i, p in enumerate(params)}
        for name, spec in other.items():
            param = _parse_param(name, spec, index.get(name) is not None and params[index[name]])
            if name in index:
                params[index[name]] = param
            else:
                index[name] = len(params)
                params.append(param)
        return SearchSpace(tuple(params))

    def restrict(self, name: str, values: Iterable) -> SearchSpace:
        """This space with the choices of a categorical parameter narrowed."""
        values = tuple(values)
        p = self[name]
        unknown = [v for v in values if p.type == CATEGORICAL and v not in p.choices]
        if unknown:
            raise ConfigError(
                f"{name}: {', '.join(map(str, unknown))} not among {', '.join(map(str, p.choices))}"
            )
        new = replace(p, choices=values, grid=tuple(v for v in p.grid if v in values) or values)
        return SearchSpace(tuple(new if q.name == name else q for q in self.params))

    def to_toml(self, header: str = "") -> str:
        parts = [header.rstrip()] if header else []
        parts.extend(p.to_toml() for p in self.params)
        return "\n\n".join(parts) + "\n"

    def to_dict(self) -> dict:
        """A JSON-friendly description, recorded with every study."""
        out = {}
        for p in self.params:
            entry: dict = {"type": p.type}
            for key in ("choices", "low", "high", "log", "step", "value", "grid"):
                v = getattr(p, key)
                if v not in ((), None, False):
                    entry[key] = list(v) if isinstance(v, tuple) else v
            if p.when:
                entry["when"] = {k: list(v) for k, v in p.when.items()}
            out[p.name] = entry
        return out

    def fingerprint(self) -> str:
        import hashlib

        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _detector_params() -> dict:
    from anomtune.detector import AutoencoderDetector

    params = AutoencoderDetector().get_params()
    params.pop("random_state")
    params.pop("device")
    return params


def _parse_param(name: str, spec: object, base: Param | bool) -> Param:
    where = f"search space: [{name}]"
    known = _detector_params()
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: not a detector parameter{hint}")
    if not isinstance(spec, Mapping):
        # A bare value fixes the parameter: `epochs = 80` at the top level.
        return Param(name, FIXED, value=spec)
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{hint}")
    when_raw = spec.get("when", base.when if base else {})
    if not isinstance(when_raw, Mapping):
        raise ConfigError(f"{where}: 'when' must be a table like {{ variant = [\"vae\"] }}")
    when = {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in when_raw.items()}
    grid = spec.get("grid", ())
    if not isinstance(grid, (list, tuple)):
        raise ConfigError(f"{where}: 'grid' must be a list")
    grid = tuple(grid)
    help_text = spec.get("help", base.help if base else "")
    if "value" in spec:
        if "choices" in spec or "low" in spec or "high" in spec:
            raise ConfigError(f"{where}: 'value' fixes the parameter; drop choices/low/high")
        return Param(name, FIXED, value=spec["value"], when=when, help=help_text)
    kind = spec.get("type")
    if kind is None:
        if "choices" in spec:
            kind = CATEGORICAL
        elif "low" in spec or "high" in spec:
            both_int = all(
                isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool)
                for k in ("low", "high")
            )
            kind = INT if both_int else FLOAT
        elif base:
            kind = base.type
        else:
            raise ConfigError(f"{where}: give 'choices', 'low'/'high' or 'value'")
    if kind not in (CATEGORICAL, INT, FLOAT):
        raise ConfigError(f"{where}: type must be categorical, int or float, not {kind!r}")
    if kind == CATEGORICAL:
        choices = spec.get("choices", base.choices if base and base.type == CATEGORICAL else None)
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{where}: 'choices' must be a non-empty list")
        return Param(
            name, CATEGORICAL, choices=tuple(choices), when=when, grid=grid, help=help_text
        )
    inherit = base if base and base.type in (INT, FLOAT) else None
    low = spec.get("low", inherit.low if inherit else None)
    high = spec.get("high", inherit.high if inherit else None)
    log = spec.get("log", inherit.log if inherit and "low" not in spec else False)
    step = spec.get("step")
    for key, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where}: '{key}' must be a finite number, not {v!r}")
    if kind == INT and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: an int range needs whole-number 'low' and 'high'")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is greater than high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0 (got {low})")
    if log and step is not None:
        raise ConfigError(f"{where}: 'step' cannot be combined with a log scale")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}: 'step' must be a positive number")
    if kind == INT:
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    for v in grid:
        if not isinstance(v, (int, float)) or not low <= v <= high:
            raise ConfigError(f"{where}: grid value {v!r} is outside [{low}, {high}]")
    return Param(
        name, kind, low=low, high=high, log=log, step=step, when=when, grid=grid, help=help_text
    )


def load_space(path: str | Path, base: SearchSpace | None = None) -> SearchSpace:
    """Read a TOML space file; its entries replace or extend ``base``.

    Besides parameter tables, the key ``variants = [...]`` restricts the
    variants a study tries.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such space file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the space file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    variants = data.pop("variants", None)
    space = base if base is not None else SearchSpace(())
    try:
        space = space.with_overrides(data)
        if variants is not None:
            if not isinstance(variants, list) or not variants:
                raise ConfigError("'variants' must be a non-empty list")
            space = space.restrict("variant", variants)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except KeyError as exc:
        raise ConfigError(f"{path}: 'variants' needs a [variant] entry in the space") from exc
    return space


def default_space(n_features: int) -> SearchSpace:
    """The default space: every variant with its own parameters, sized to the data.

    Widths and the bottleneck scale with the number of (encoded) features;
    learning rate, weight decay and penalty weights are searched on log
    scales.
    """
    d = max(1, int(n_features))
    width_low = int(min(max(d // 2, 16), 256))
    width_high = int(min(max(4 * d, 128), 1024))
    latent_high = int(min(max(d, 8), 64))
    P = Param

    def variant_scale(name, variant, low, high, *, grid, when=None, help=""):
        """A log-scaled float that only ``variant`` has (its penalty weight, noise, ...)."""
        when = {"variant": (variant,), **(when or {})}
        return P(name, FLOAT, low=low, high=high, log=True, when=when, grid=grid, help=help)

    params = [
        P(
            "variant",
            CATEGORICAL,
            choices=("ae", "sparse", "denoising", "contractive", "vae"),
            help="autoencoder variant",
        ),
        P("n_layers", INT, low=1, high=3, grid=(2,), help="hidden layers in the encoder"),
        P(
            "width",
            INT,
            low=width_low,
            high=width_high,
            log=True,
            grid=(int(min(max(64, width_low), width_high)),),
            help="first hidden width",
        ),
        P(
            "shrink",
            FLOAT,
            low=0.25,
            high=1.0,
            grid=(0.5,),
            help="each hidden layer is this times the previous",
        ),
        P(
            "latent_dim",
            INT,
            low=2,
            high=latent_high,
            log=True,
            grid=(min(16, latent_high),),
            help="bottleneck size",
        ),
        P(
            "activation",
            CATEGORICAL,
            choices=("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"),
            grid=("relu",),
        ),
        P("dropout", FLOAT, low=0.0, high=0.5, grid=(0.2,)),
        P("batch_norm", CATEGORICAL, choices=(True, False), grid=(True,)),
        P("scaler", CATEGORICAL, choices=("standard", "robust", "minmax"), grid=("standard",)),
        P(
            "output_activation",
            CATEGORICAL,
            choices=("identity", "sigmoid"),
            when={"scaler": ("minmax",)},
            grid=("identity",),
            help="sigmoid output trains with binary cross-entropy",
        ),
        P("sparsity", CATEGORICAL, choices=("l1", "kl"), when={"variant": ("sparse",)}),
        variant_scale("sparsity_weight", "sparse", 1e-5, 1e-1, grid=(1e-3,)),
        variant_scale(
            "sparsity_target", "sparse", 0.01, 0.3, grid=(0.05,), when={"sparsity": ("kl",)}
        ),
        P("noise", CATEGORICAL, choices=("gaussian", "mask"), when={"variant": ("denoising",)}),
        variant_scale("noise_level", "denoising", 0.02, 0.5, grid=(0.2,)),
        variant_scale("contractive_weight", "contractive", 1e-5, 1e-1, grid=(1e-3,)),
        variant_scale(
            "beta",
            "vae",
            0.1,
            4.0,
            grid=(0.5, 1.0),
            help="KL weight: 1 is the VAE, other values the beta-VAE",
        ),
        P("vae_score", CATEGORICAL, choices=("reconstruction", "elbo"), when={"variant": ("vae",)}),
        P("optimizer", CATEGORICAL, choices=("adam", "adamw", "rmsprop", "sgd"), grid=("adam",)),
        P(
            "momentum",
            FLOAT,
            low=0.5,
            high=0.99,
            when={"optimizer": ("sgd", "rmsprop")},
            grid=(0.9,),
        ),
        P("learning_rate", FLOAT, low=1e-4, high=3e-2, log=True, grid=(1e-3, 3e-3)),
        P("weight_decay", FLOAT, low=1e-7, high=1e-2, log=True, grid=(1e-5,)),
        P("batch_size", CATEGORICAL, choices=(32, 64, 128, 256), grid=(64,)),
        P(
            "epochs",
            FIXED,
            value=100,
            help="most epochs a trial trains; the best epoch on validation is kept",
        ),
    ]
    return SearchSpace(tuple(params))


def narrow(space: SearchSpace, trials: Sequence[Mapping[str, object]]) -> SearchSpace:
    """A finer space around ``trials`` (the best ones of an earlier study).

    Numeric ranges shrink to what those trials used (on a log scale where the
    parameter has one); categorical choices none of them used are dropped.
    Parameters none of them used keep their range.
    """
    params = []
    for p in space.params:
        used = [t[p.name] for t in trials if p.name in t]
        if not used or p.type == FIXED:
            params.append(p)
            continue
        if p.type == CATEGORICAL:
            kept = tuple(c for c in p.choices if c in used)
            grid = tuple(g for g in p.grid if g in kept)
            params.append(replace(p, choices=kept, grid=grid))
            continue
        lo, hi = min(used), max(used)
        if p.type == INT:
            lo, hi = int(lo), int(hi)
        if lo == hi:
            lo, hi = _widen(p, lo)
        grid = tuple(g for g in p.grid if lo <= g <= hi)
        params.append(replace(p, low=lo, high=hi, grid=grid))
    return SearchSpace(tuple(params))


def _widen(p: Param, value):
    """A small range around a single value, kept inside the parameter's bounds."""
    if p.type == INT:
        return max(p.low, value - 1), min(p.high, value + 1)
    if p.log:
        return max(p.low, value / 1.5), min(p.high, value * 1.5)
    span = 0.1 * (p.high - p.low)
    return max(p.low, value - span), min(p.high, value + span)


def top_quartile(values: Sequence[float], maximize: bool = True) -> list[int]:
    """Positions of the best quarter (at least one) of ``values``."""
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=maximize)
    return order[: max(1, math.ceil(len(values) / 4))]
