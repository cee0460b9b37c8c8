"""A wheel built from the repository installs into a fresh environment and works there, with no
source checkout on the path (the package must not find its files through ``parents[2]``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (path,) = out.glob("jaxtrust-*.whl")
    return path


def test_wheel_ships_the_package_and_its_type_marker(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxtrust/py.typed" in names
    assert "jaxtrust/safety/spf/transform.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_wheel_installs_into_a_fresh_venv_and_runs_info(wheel, tmp_path):
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # jaxtrust's dependencies come from this environment's site-packages (PYTHONPATH does not
    # run .pth files, so the editable install of the checkout stays out of the way)
    site = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": site, "XLA_FLAGS": ""}
    env.pop("VIRTUAL_ENV", None)
    where = subprocess.run(
        [str(python), "-c", "import jaxtrust; print(jaxtrust.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    ).stdout.strip()
    assert where.startswith(str(env_dir)), where
    out = subprocess.run(
        [str(env_dir / "bin" / "jaxtrust"), "info", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    data = json.loads(out.stdout)
    assert data["versions"]["jaxtrust"] and data["devices"]
