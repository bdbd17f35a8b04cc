"""An experiment plan (PLAN.json): a base TrainConfig, a search space over its fields, a sampler, a budget.

::

    {"name": "lr-and-backbone",
     "base": {TrainConfig fields: what every trial shares},
     "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": true},      a range (numeric fields)
               "epochs": {"low": 2, "high": 8, "step": 2},          an int field: whole numbers
               "model": ["small_cnn", "resnet18"],                 choices (any field)
               "img_size": [[64, 48], [128, 96]],                  list values are choices too
               "specs": ["baseline", "light"]},                    transform pairs: presets or saved pairs
     "sampler": "grid" | "random" | "tpe",   "trials": 8,   "seed": 0,
     "pruner": "median" | "none" | {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1}
                                  | {"type": "threshold", "lower": 0.3, "upper": null, "n_warmup_steps": 0},
     "metric": "val_f1" | "val_acc" | "val_loss"}

Space keys are TrainConfig fields, plus ``specs`` (a train/eval transform pair by name, resolved when the
plan is made so that workers on other machines need no specs folder). A trial's image size (``img_size``
in the space or the base) is applied to both specs' final Resize, as ``python -m core train --img-size``
does. Every choice and both ends of every range are checked against TrainConfig when the plan is read;
anything unknown or out of range is a ConfigError naming it (``space.lr: high: ...``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, SpecError, WorkbenchError
from core.training.config import TrainConfig

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "threshold", "none")
# metric -> the direction Optuna optimises it in; each is a column of an epoch line in metrics.jsonl
METRICS = {"val_f1": "maximize", "val_acc": "maximize", "val_loss": "minimize"}
SPECS_KEY = "specs"  # the pseudo-field choosing a train/eval transform pair by name
PLAN_FIELDS = ("name", "base", "space", "sampler", "trials", "pruner", "metric", "seed", "pairs")
MAX_TRIALS = 10_000
# Small sweeps: judge a trial only against two finished ones, and never on its first epoch alone.
MEDIAN_DEFAULTS = {"n_startup_trials": 2, "n_warmup_steps": 1}
_PRUNER_KEYS = {"median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
                "threshold": ("lower", "upper", "n_warmup_steps", "interval_steps"), "none": ()}  # fmt: skip


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid_values(self) -> list:
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]


@dataclass(frozen=True)
class Choices:
    values: tuple
    encoded: bool  # list/dict values go to Optuna as JSON strings (it stores plain scalars only)

    def optuna_values(self) -> list:
        return [json.dumps(v, sort_keys=True) for v in self.values] if self.encoded else list(self.values)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value


@dataclass(frozen=True)
class SweepPlan:
    name: str
    base: dict[str, Any]  # TrainConfig.to_dict() of the base config
    space: dict[str, Range | Choices]
    sampler: str
    trials: int
    pruner: dict[str, Any]  # {"type": ..., options}
    metric: str
    seed: int
    pairs: dict[str, list]  # specs choice name -> [train_spec, eval_spec], resolved when the plan was made

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    # ---- JSON in/out ---------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Any) -> SweepPlan:
        """Validate a plan; ConfigError names the first bad field."""
        if not isinstance(raw, dict):
            raise ConfigError(f"plan must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(PLAN_FIELDS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown plan field (known: {', '.join(PLAN_FIELDS[:-1])})")
        name = raw.get("name", "sweep")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ConfigError("name: give the plan a name of 1 to 100 characters")
        base = _base_config(raw.get("base", {}))
        sampler = _one_of("sampler", raw.get("sampler", "tpe"), SAMPLERS)
        metric = _one_of("metric", raw.get("metric", "val_f1"), tuple(METRICS))
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: a whole number of at least 0, got {seed!r}")
        raw_space = raw.get("space")
        if not isinstance(raw_space, dict) or not raw_space:
            raise ConfigError(
                'space: give at least one field to vary, e.g. {"lr": {"low": 1e-4, "high": 1e-1, "log": true}}'
            )
        pairs = _resolve_pairs(raw_space.get(SPECS_KEY), raw.get("pairs"))
        space = {key: _space_entry(key, value, base, pairs) for key, value in raw_space.items()}
        plan = cls(
            name.strip(),
            base,
            space,
            sampler,
            _trials(raw.get("trials", 10)),
            _pruner(raw.get("pruner", "median")),
            metric,
            seed,
            pairs,
        )
        if sampler == "grid":
            plan.grid()  # a range without a step cannot be a grid: refused now, naming it
            size = math.prod(len(v) for v in plan.grid().values())
            if plan.trials > size:
                raise ConfigError(f"trials: the grid has only {size} points; ask for at most {size} trials")
        return plan

    def to_dict(self) -> dict[str, Any]:
        space: dict[str, Any] = {}
        for key, entry in self.space.items():
            if isinstance(entry, Choices):
                space[key] = list(entry.values)
            else:
                space[key] = {"low": entry.low, "high": entry.high, "log": entry.log}
                if entry.step is not None:
                    space[key]["step"] = entry.step
        return {
            "name": self.name,
            "base": dict(self.base),
            "space": space,
            "sampler": self.sampler,
            "trials": self.trials,
            "pruner": dict(self.pruner),
            "metric": self.metric,
            "seed": self.seed,
            "pairs": dict(self.pairs),
        }

    # ---- what Optuna needs --------------------------------------------------------------------------------

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space: every choice, every step of every stepped range."""
        grid = {}
        for key, entry in self.space.items():
            if isinstance(entry, Choices):
                grid[key] = entry.optuna_values()
            elif entry.step is None:
                raise ConfigError(f"space.{key}: the grid sampler needs choices (a list) or a range with a step")
            else:
                grid[key] = entry.grid_values()
        return grid

    def make_sampler(self, seed: int | None = None):
        import optuna

        seed = self.seed if seed is None else seed
        if self.sampler == "grid":
            return _grid_sampler_class()(self.grid(), seed=self.seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def make_pruner(self):
        return build_pruner(self.pruner)

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's parameters (drawn by the sampler, or the stored ones of a retried trial)."""
        params = {}
        for key, entry in self.space.items():
            if isinstance(entry, Choices):
                params[key] = entry.decode(trial.suggest_categorical(key, entry.optuna_values()))
            elif entry.integer:
                params[key] = trial.suggest_int(
                    key, int(entry.low), int(entry.high), step=int(entry.step or 1), log=entry.log
                )
            else:
                params[key] = trial.suggest_float(key, entry.low, entry.high, step=entry.step, log=entry.log)
        return params

    def decode_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's stored params as the plan's values (JSON-encoded choices decoded)."""
        out = {}
        for key, value in params.items():
            entry = self.space.get(key)
            out[key] = entry.decode(value) if isinstance(entry, Choices) else value
        return out

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The base config with ``params`` applied; ConfigError when the combination is not valid."""
        return TrainConfig.from_dict(merge_params(self.base, params, self.pairs))


def _grid_sampler_class():
    """GridSampler for ask-and-tell workers: the budget is ours to keep, so it never calls study.stop()
    (which raises outside study.optimize once the grid is used up)."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler


# ---- helpers --------------------------------------------------------------------------------------------


def load_plan(path: str | os.PathLike) -> SweepPlan:
    """Read and validate PLAN.json; ConfigError names the file and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: plan file not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    try:
        return SweepPlan.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from err


def merge_params(base: dict[str, Any], params: dict[str, Any], pairs: dict[str, list]) -> dict[str, Any]:
    """A config dict: ``base`` with ``params``; a chosen pair sets both specs; img_size retargets them."""
    config = dict(base)
    params = dict(params)
    pair = params.pop(SPECS_KEY, None)
    if pair is not None:
        config["train_spec"], config["eval_spec"] = (list(s) for s in pairs[pair])
    config.update(params)
    if pair is not None or "img_size" in params:
        size = config.get("img_size")
        config["train_spec"] = resize_last(config["train_spec"], size)
        config["eval_spec"] = resize_last(config["eval_spec"], size)
    return config


def resize_last(spec: list, size: Any) -> list:
    """The spec with its last Resize/RandomResizedCrop sized ``size`` (TrainConfig then checks the rest)."""
    spec = [dict(step) for step in spec]
    for step in reversed(spec):
        if step.get("op") in ("Resize", "RandomResizedCrop"):
            step["size"] = list(size) if isinstance(size, (list, tuple)) else size
            break
    return spec


def _one_of(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(options)}")
    return value


def _trials(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRIALS:
        raise ConfigError(f"trials: a whole number of trials from 1 to {MAX_TRIALS}, got {value!r}")
    return value


def _base_config(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("base: give the shared TrainConfig fields as a JSON object")
    raw = {k: v for k, v in raw.items() if k != "kind"}
    if (
        isinstance(raw.get("data"), str)
        and raw["data"]
        and not os.path.isabs(raw["data"])
        and os.path.exists(raw["data"])
    ):
        raw["data"] = os.path.abspath(raw["data"])  # trials run in the repository folder, not here
    try:
        return TrainConfig.from_dict(raw).to_dict()
    except ConfigError as err:
        raise ConfigError(f"base.{err}") from err


def _pruner(value: Any) -> dict[str, Any]:
    spec = {"type": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or spec.get("type") not in PRUNERS:
        raise ConfigError(f'pruner: "median", "threshold" or "none" (or {{"type": ..., options}}), got {value!r}')
    allowed = _PRUNER_KEYS[spec["type"]]
    for key, option in spec.items():
        if key == "type":
            continue
        if key not in allowed:
            raise ConfigError(
                f"pruner.{key}: not an option of the {spec['type']} pruner (options: {', '.join(allowed)})"
            )
        if key in ("lower", "upper"):
            if option is not None and (isinstance(option, bool) or not isinstance(option, (int, float))):
                raise ConfigError(f"pruner.{key}: expected a number, got {option!r}")
        elif isinstance(option, bool) or not isinstance(option, int) or option < (1 if key == "interval_steps" else 0):
            raise ConfigError(f"pruner.{key}: expected a whole number (epochs), got {option!r}")
    if spec["type"] == "threshold" and spec.get("lower") is None and spec.get("upper") is None:
        raise ConfigError("pruner: a threshold pruner needs lower and/or upper")
    try:
        build_pruner(spec)  # Optuna's own checks (lower < upper, ...)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"pruner: {err}") from err
    return dict(spec)


def build_pruner(spec: dict[str, Any]):
    """The Optuna pruner of a validated pruner spec ({"type": ..., options})."""
    import optuna

    options = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "median":
        return optuna.pruners.MedianPruner(**{**MEDIAN_DEFAULTS, **options})
    if spec["type"] == "threshold":
        return optuna.pruners.ThresholdPruner(**options)
    return optuna.pruners.NopPruner()


def _resolve_pairs(choices: Any, given: Any) -> dict[str, list]:
    """{pair name: [train_spec, eval_spec]} for the ``specs`` choices (kept from a stored plan when given)."""
    if choices is None:
        return {}
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise ConfigError(
            f"space.{SPECS_KEY}: a list of transform pair names (presets or saved pairs), got {choices!r}"
        )
    given = given if isinstance(given, dict) else {}
    from core.specs import transforms

    pairs = {}
    for name in choices:
        if name in given:
            pairs[name] = [list(given[name][0]), list(given[name][1])]
            continue
        try:
            train, eval_ = transforms.resolve_pair(name)
        except (SpecError, WorkbenchError) as err:
            raise ConfigError(f"space.{SPECS_KEY}: {err}") from err
        pairs[name] = [list(train), list(eval_)]
    return pairs


def _field_types() -> dict[str, str]:
    """TrainConfig field -> its annotation ("int", "float", "str", ...)."""
    import dataclasses

    return {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def _space_entry(key: str, value: Any, base: dict[str, Any], pairs: dict[str, list]) -> Range | Choices:
    fields = _field_types()
    if key != SPECS_KEY and key not in fields:
        raise ConfigError(f"space.{key}: not a TrainConfig field (known: {SPECS_KEY}, {', '.join(sorted(fields))})")
    if isinstance(value, list):
        return _choices(key, value, base, pairs)
    if isinstance(value, dict):
        return _range(key, value, base)
    raise ConfigError(f"space.{key}: give a list of choices or a range {{low, high, log?, step?}}, got {value!r}")


def _choices(key: str, values: list, base: dict[str, Any], pairs: dict[str, list]) -> Choices:
    if not values:
        raise ConfigError(f"space.{key}: the list of choices is empty")
    encoded = any(isinstance(v, (list, dict)) for v in values)
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise ConfigError(f"space.{key}: a choice is listed twice")
    for value in values:
        if not encoded and not (value is None or isinstance(value, (str, int, float, bool))):
            raise ConfigError(f"space.{key}: choices must be JSON values, got {value!r}")
        _check_against_base(key, value, base, pairs, what=f"choice {value!r}")
    return Choices(tuple(values), encoded)


def _range(key: str, raw: dict, base: dict[str, Any]) -> Range:
    unknown = sorted(set(raw) - {"low", "high", "log", "step"})
    if unknown:
        raise ConfigError(f"space.{key}.{unknown[0]}: unknown range option (use low, high, log, step)")
    kind = _field_types().get(key)
    if kind not in ("int", "float"):
        raise ConfigError(f"space.{key}: a range needs a numeric field; give a list of choices instead")
    integer = kind == "int"
    low, high, log, step = raw.get("low"), raw.get("high"), raw.get("log", False), raw.get("step")
    number = int if integer else (int, float)
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v):
            what = "a whole number" if integer else "a number"
            raise ConfigError(f"space.{key}.{name}: {what} is needed, got {v!r}")
    if not low < high:
        raise ConfigError(f"space.{key}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"space.{key}.log: true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"space.{key}: a log range needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ConfigError(f"space.{key}.step: a positive {'whole ' if integer else ''}number, got {step!r}")
        if log and (not integer or step != 1):
            raise ConfigError(f"space.{key}: log and step cannot be combined; drop one")
        if step > high - low:
            raise ConfigError(f"space.{key}.step: {step} is larger than the range {low}..{high}")
    for name, v in (("low", low), ("high", high)):
        _check_against_base(key, v, base, {}, what=name)
    return Range(float(low) if not integer else low, float(high) if not integer else high, log, step, integer)


def _check_against_base(key: str, value: Any, base: dict[str, Any], pairs: dict[str, list], what: str) -> None:
    """The base config with ``key`` = ``value`` must be a valid TrainConfig."""
    if key == SPECS_KEY and value not in pairs:
        raise ConfigError(f"space.{key}: {what} is not a transform pair name")
    try:
        TrainConfig.from_dict(merge_params(base, {key: value}, pairs))
    except ConfigError as err:
        raise ConfigError(f"space.{key}: {what}: {err}") from err
