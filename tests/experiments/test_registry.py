"""The experiment registry, report writing and the CLI (on a toy experiment registered here)."""

import dataclasses
import json
import subprocess
import sys

import pytest

from jaxtrust import cli
from jaxtrust.experiments import ExperimentResult, Table, register, run_experiment
from jaxtrust.experiments.registry import apply_overrides


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    n: int = 3
    scale: float = 1.0
    name: str = "toy"
    flag: bool = False
    sizes: tuple = (1, 2)


@register(
    "_toy",
    description="toy",
    config_cls=ToyConfig,
    presets={"quick": ToyConfig(), "full": ToyConfig(n=10)},
)
def _toy(config, ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(range(config.n))
    ctx.save_figure(fig, "curve")
    values = [config.scale * i + ctx.seed for i in range(config.n)]
    return ExperimentResult(
        metrics={"headline": {"sum": float(sum(values))}, "values": values, "flag": config.flag},
        tables=[Table("values", ["i", "value"], [[i, v] for i, v in enumerate(values)])],
        summary="toy summary",
    )


def test_run_writes_metrics_report_and_plot(tmp_path):
    run_experiment(
        "_toy",
        preset="full",
        seed=2,
        out_dir=tmp_path,
        overrides=["scale=0.5", "flag=true"],
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["values"] == [0.5 * i + 2 for i in range(10)]
    assert metrics["flag"] is True
    assert metrics["_run"]["config"]["scale"] == 0.5 and metrics["_run"]["seed"] == 2
    report = (tmp_path / "report.md").read_text()
    assert "toy summary" in report and "| i | value |" in report and "![curve](curve.png)" in report
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_overrides_are_typed_and_validated():
    cfg = apply_overrides(ToyConfig(), ["n=7", "scale=2.5", "name=x", "flag=no", "sizes=[3,4]"])
    assert cfg == ToyConfig(n=7, scale=2.5, name="x", flag=False, sizes=(3, 4))
    with pytest.raises(ValueError, match="unknown config field 'm'"):
        apply_overrides(ToyConfig(), ["m=1"])
    with pytest.raises(ValueError, match="cannot parse n="):
        apply_overrides(ToyConfig(), ["n=abc"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(ToyConfig(), ["n"])


def test_bad_preset_seed_and_name(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        run_experiment("_toy", preset="huge", out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        run_experiment("_toy", seed=-1, out_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown experiment 'nope'"):
        run_experiment("nope", out_dir=tmp_path)
    assert cli.main(["reproduce", "nope", "--out", str(tmp_path)]) == 2


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="cells"):
        Table("t", ["a", "b"], [[1]])


@pytest.mark.smoke
def test_info_reports_versions_devices_and_backends():
    out = subprocess.run(
        [sys.executable, "-m", "jaxtrust.cli", "info", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["versions"]["jax"] and data["devices"]
    assert set(data["backends"]) >= {"fhe (concrete)", "torch", "tfds"}


def test_version_flag_and_plain_unknown_experiment_message(capsys, tmp_path):
    import jaxtrust

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxtrust {jaxtrust.__version__}"
    assert cli.main(["reproduce", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtrust: error: unknown experiment 'nope'; known: ")
    assert not err.rstrip().endswith('"')  # no stray quotes of a KeyError's repr


def test_every_listed_experiment_loads_and_registers_its_name():
    from jaxtrust.experiments.registry import EXPERIMENT_MODULES, get_experiment

    for name in EXPERIMENT_MODULES:
        experiment = get_experiment(name)
        assert experiment.name == name and set(experiment.presets) >= {"quick", "full"}
