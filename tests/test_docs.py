"""The documentation builds with warnings as errors, lists every public name, and its code runs.

* Every name in the ``__all__`` of a documented package sits in exactly one group of
  ``docs/api_groups.py``, and every public function and class has a docstring (fast).
* ``sphinx-build -W`` over ``docs/`` into a temporary folder, offline (slow).
* The Python blocks of each guide under ``docs/papers/`` run top to bottom, each page in a
  namespace of its own, as a user pasting them would run them (slow).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import api_groups  # noqa: E402

PAPERS = sorted((DOCS / "papers").glob("*.md"))


def test_every_public_name_is_in_one_group_of_the_reference():
    assert api_groups.problems() == []


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for module_name in api_groups.documented_modules():
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            # a NamedTuple's generated "Name(a, b)" is not a docstring
            if len(doc) < 20 or re.fullmatch(rf"{name}\(.*\)", doc.strip(), flags=re.S):
                missing.append(f"{module_name}.{name}")
    assert missing == [], f"public names without a docstring: {missing}"


def test_the_problems_check_can_fail(monkeypatch):
    pages = [(s, t, m, i, g) for s, t, m, i, g in api_groups.PAGES if m != "jaxtrust.zoo"]
    pages.append(("zoo", "Zoo", "jaxtrust.zoo", "", [("Models", ["base_model", "base_model"])]))
    monkeypatch.setattr(api_groups, "PAGES", pages)
    found = " ".join(api_groups.problems())
    assert "listed twice" in found and "not listed" in found and "aligned_model" in found


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra: make setup installs it")
    pytest.importorskip("myst_nb", reason="the docs extra: make setup installs it")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXTRUST_DOCS_EXECUTE": "off"}
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,  # ~25 s of CPU; wall time on a shared machine is many times that
    )
    assert out.returncode == 0, out.stderr[-4000:]
    html = (tmp_path / "html" / "papers" / "spf.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "jaxtrust reproduce spf" in text
    assert 'class="math' in html  # the math went to MathJax ...
    assert "mathjax" in html.lower() and "cdn.jsdelivr" not in html  # ... served locally
    for raw in ("{math}", ".. math", "{func}", ":func:", "{doc}", "```"):
        assert raw not in text, f"raw markup {raw!r} on the SPF page"
    api = re.sub(r"<[^>]+>", "", (tmp_path / "html" / "api" / "spf.html").read_text())
    assert "Parameters" in api and "Returns" in api  # napoleon turned Args / Returns into fields


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


def test_each_guide_has_a_code_block():
    assert PAPERS, "no guide under docs/papers"
    assert [p.stem for p in PAPERS if not python_blocks(p)] == []


# Every page's code runs in its own namespace, all in one interpreter: jax is imported once,
# which keeps the seven pages within the slow tier's budget.
RUNNER = """
import json, sys, traceback
failures = {}
for name, code in json.loads(sys.stdin.read()).items():
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except Exception:
        failures[name] = traceback.format_exc()[-3000:]
print(json.dumps(failures))
"""


@pytest.mark.slow
def test_guide_code_runs(tmp_path):
    import json

    pages = {p.name: python_blocks(p) for p in PAPERS}
    env = {**os.environ, "XLA_FLAGS": "", "JAXTRUST_SMOKE": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(pages),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
