"""Registered experiments: the small-scale reproductions behind ``jaxtrust reproduce NAME``.

Each experiment is one module that defines a frozen config dataclass with a ``quick`` and a
``full`` preset (big_vision style: one config object per experiment) and registers a function
``run(config, ctx) -> ExperimentResult`` with :func:`register`. The CLI writes
``metrics.json``, ``report.md`` and the plots.
"""

from jaxtrust.experiments.registry import (
    Experiment,
    ExperimentResult,
    RunContext,
    Table,
    check_config,
    get_experiment,
    list_experiments,
    pyplot,
    register,
    run_experiment,
)

__all__ = [
    "Experiment",
    "ExperimentResult",
    "RunContext",
    "Table",
    "check_config",
    "get_experiment",
    "list_experiments",
    "pyplot",
    "register",
    "run_experiment",
]
