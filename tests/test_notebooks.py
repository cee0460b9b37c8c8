"""Notebooks run top to bottom (shrunk with JAXTRUST_SMOKE=1), as a user would run them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path):
    env = {**os.environ, "JAXTRUST_SMOKE": "1"}
    env["XLA_FLAGS"] = ""  # one device, as in Colab
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
