"""Experiment registry, run context and report writing."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import platform
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Every reproduction, by name, and the module that registers it: the one list to edit when a
# paper lands. Modules are imported lazily (see ``_load``) so that ``jaxtrust --help`` stays fast.
EXPERIMENT_MODULES: dict[str, str] = {
    "lm": "jaxtrust.experiments.lm",
    "spf": "jaxtrust.safety.spf.reproduce",
    "oneshot": "jaxtrust.safety.recovery.reproduce",
    "actapprox": "jaxtrust.safety.actapprox.reproduce",
    "secpe": "jaxtrust.privacy.secpe.reproduce",
    "mape": "jaxtrust.unlearning.mape.reproduce",
    "rsu": "jaxtrust.unlearning.rsu.reproduce",
    "shape": "jaxtrust.multimodal.shape.reproduce",
    "memhunter": "jaxtrust.privacy.memhunter.reproduce",
    "aqua": "jaxtrust.multimodal.aqua.reproduce",
    "ltsv": "jaxtrust.valuation.ltsv.reproduce",
}

PRESETS = ("quick", "full")


def check_config(
    config: Any,
    *,
    positive: Sequence[str] = (),
    nonnegative: Sequence[str] = (),
    fractions: Sequence[str] = (),
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Validate a reproduction's config fields (call it from ``__post_init__``).

    Args:
      config: the config dataclass.
      positive: fields that must be ints >= 1.
      nonnegative: fields that must be ints >= 0.
      fractions: fields that must be numbers in [0, 1].
      choices: ``field -> allowed values``; a tuple-valued field must hold only allowed values.

    Raises:
      ValueError: naming the first bad field, its value and what was expected.

    Example:
      >>> import dataclasses
      >>> @dataclasses.dataclass(frozen=True)
      ... class C:
      ...     steps: int = 0
      >>> check_config(C(), positive=("steps",))
      Traceback (most recent call last):
      ...
      ValueError: steps must be a positive int, got 0
    """
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in nonnegative:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    for name in fractions:
        value = getattr(config, name)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    for name, allowed in (choices or {}).items():
        value = getattr(config, name)
        values = value if isinstance(value, tuple | list) else (value,)
        for v in values:
            if v not in allowed:
                raise ValueError(f"{name}: unknown value {v!r}; known: {tuple(allowed)}")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (reports are written to files;
    imported on demand because matplotlib costs a second at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclasses.dataclass(frozen=True)
class Table:
    """A result table: a title, column names and rows (numbers or strings)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def __post_init__(self):
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {row!r} has {len(row)} cells, expected "
                    f"{len(self.columns)}"
                )

    def to_markdown(self) -> str:
        def fmt(x: Any) -> str:
            if isinstance(x, float):
                return "nan" if math.isnan(x) else f"{x:.4g}"
            return str(x)

        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_text(self) -> str:
        cells = [[str(c) for c in self.columns]] + [
            [Table._fmt(x) for x in row] for row in self.rows
        ]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        out = [self.title]
        for j, row in enumerate(cells):
            out.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
            if j == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)

    @staticmethod
    def _fmt(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)


@dataclasses.dataclass
class ExperimentResult:
    """What an experiment returns: JSON-able metrics, tables for the report, and prose."""

    metrics: dict[str, Any]
    tables: list[Table] = dataclasses.field(default_factory=list)
    summary: str = ""


@dataclasses.dataclass
class RunContext:
    """Where an experiment writes, and the shared knobs of a run."""

    out_dir: Path
    seed: int
    preset: str
    progress: bool = True
    plots: list[Path] = dataclasses.field(default_factory=list)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``out_dir/name.png`` and list it in the report."""
        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.plots.append(path)
        return path

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered reproduction (see :func:`register`).

    Attributes:
      name: the name ``jaxtrust reproduce NAME`` takes.
      description: the first line of the run function's docstring.
      config_cls: the frozen config dataclass.
      presets: preset name (``smoke``, ``quick``, ``full``, ...) -> config.
      fn: ``fn(config, ctx) -> ExperimentResult``.
    """

    name: str
    description: str
    config_cls: type
    presets: Mapping[str, Any]
    fn: Callable[[Any, RunContext], ExperimentResult]


_REGISTRY: dict[str, Experiment] = {}


def register(
    name: str,
    config_cls: type | None = None,
    presets: Mapping[str, Any] | None = None,
    *,
    description: str | None = None,
):
    """Decorator registering ``fn(config, ctx) -> ExperimentResult`` under ``name``.

    Args:
      name: the experiment's name (``jaxtrust reproduce NAME``).
      config_cls: its frozen config dataclass.
      presets: ``preset name -> config``; must include ``quick`` and ``full``.
      description: one line for ``jaxtrust list`` (default: the first line of ``fn``'s
        docstring).
    """
    if config_cls is None or presets is None:
        raise TypeError("register needs config_cls and presets")
    missing = set(PRESETS) - set(presets)
    if missing:
        raise ValueError(f"experiment {name!r} lacks presets {sorted(missing)}")

    def decorator(fn):
        text = description or (fn.__doc__ or "").strip().split("\n")[0]
        if not text:
            raise ValueError(f"experiment {name!r}: give a description or a docstring")
        _REGISTRY[name] = Experiment(name, text, config_cls, dict(presets), fn)
        return fn

    return decorator


def _load(name: str) -> None:
    importlib.import_module(EXPERIMENT_MODULES[name])
    if name not in _REGISTRY:
        raise RuntimeError(
            f"{EXPERIMENT_MODULES[name]} is listed for experiment {name!r} but registers "
            f"{sorted(_REGISTRY)}; fix EXPERIMENT_MODULES or the module's @register name"
        )


def list_experiments() -> list[Experiment]:
    """Every listed experiment (importing each module), sorted by name."""
    for name in EXPERIMENT_MODULES:
        _load(name)
    return [_REGISTRY[k] for k in sorted(EXPERIMENT_MODULES)]


class UnknownExperimentError(KeyError):
    """An experiment name that is not in :data:`EXPERIMENT_MODULES`."""

    def __str__(self) -> str:  # KeyError's str() quotes its message; say it plainly
        return str(self.args[0]) if self.args else ""


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (importing only its module).

    Experiments registered by a user's own code with :func:`register` are found too.

    Raises:
      UnknownExperimentError: ``name`` is not known (the message lists the known names).
    """
    if name in _REGISTRY:  # listed and loaded, or registered by the user's own code
        return _REGISTRY[name]
    if name not in EXPERIMENT_MODULES:
        known = sorted(set(EXPERIMENT_MODULES) | set(_REGISTRY))
        raise UnknownExperimentError(f"unknown experiment {name!r}; known: {', '.join(known)}")
    _load(name)
    return _REGISTRY[name]


def _coerce(value: str, annotation: Any) -> Any:
    """Parse a command-line override ``--set key=value`` into the field's type."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if annotation in (int, float, str):
        return annotation(value)
    if origin is tuple or annotation is tuple:
        return tuple(json.loads(value)) if value.startswith("[") else tuple(value.split(","))
    return json.loads(value)


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Return ``config`` with ``key=value`` overrides applied (types from the dataclass)."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        if key not in hints:
            raise ValueError(
                f"unknown config field {key!r} for {type(config).__name__}; fields: {sorted(hints)}"
            )
        try:
            changes[key] = _coerce(value, hints[key])
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot parse {key}={value!r} as {hints[key]}: {err}") from err
    return dataclasses.replace(config, **changes)


def environment_info() -> dict[str, Any]:
    import jax

    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU",
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else (1e308 if x > 0 else -1e308)
    return x


def run_experiment(
    name: str,
    *,
    preset: str = "quick",
    seed: int = 0,
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> ExperimentResult:
    """Run a registered experiment and write ``metrics.json``, ``report.md`` and plots.

    ``metrics.json`` holds the experiment's own metrics at top level (the schema each method's
    issue specifies) plus a ``_run`` entry with the config, seed and environment.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    experiment = get_experiment(name)
    if preset not in experiment.presets:
        raise ValueError(
            f"preset must be one of {tuple(experiment.presets)} for {name!r}, got {preset!r}"
        )
    config = apply_overrides(experiment.presets[preset], overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(out_dir=out, seed=seed, preset=preset, progress=progress)
    ctx.log(f"{name}: preset={preset} seed={seed} -> {out}")
    start = time.perf_counter()
    result = experiment.fn(config, ctx)
    wall = time.perf_counter() - start
    run_info = {
        "experiment": name,
        "preset": preset,
        "seed": seed,
        "config": _jsonable(config),
        "wall_s": round(wall, 2),
        **environment_info(),
    }
    metrics = {**_jsonable(result.metrics), "_run": run_info}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False))
    tmp.replace(out / "metrics.json")  # atomic: a crash never leaves a half-written file
    lines = [
        f"# {name}: {experiment.description}",
        "",
        f"Preset `{preset}`, seed {seed}, {wall:.1f} s on {run_info['machine']} (jax "
        f"{run_info['jax']}, {run_info['date']}).",
        "",
    ]
    if result.summary:
        lines += [result.summary, ""]
    for table in result.tables:
        lines += [table.to_markdown(), ""]
    for plot in ctx.plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    lines += [
        "<details><summary>config</summary>",
        "",
        "```json",
        json.dumps(_jsonable(config), indent=2),
        "```",
        "</details>",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    if progress:
        for table in result.tables:
            print("\n" + table.to_text())
        print(f"\nwrote {out / 'metrics.json'} and {out / 'report.md'}", flush=True)
    return result
