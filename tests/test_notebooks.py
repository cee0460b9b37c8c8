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
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_pair_is_in_sync_with_the_percent_script(path):
    # The .ipynb (what Colab opens) is generated from the py:percent source with
    # `jupytext --to ipynb`; its code cells must be the script's code cells.
    import json

    ipynb = path.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --to ipynb {path}`"
    cells = json.loads(ipynb.read_text())["cells"]
    nb_code = ["".join(c["source"]).strip() for c in cells if c["cell_type"] == "code"]
    script_code = []
    for block in path.read_text().split("# %%")[1:]:
        if block.startswith(" [markdown]"):
            continue
        code = block.split("\n", 1)[1] if "\n" in block else ""
        script_code.append(code.strip())
    # jupytext turns a commented magic ("# %pip ...") into the magic itself
    script_code = [c[2:] if c.startswith("# %") else c for c in script_code]
    assert nb_code == script_code
