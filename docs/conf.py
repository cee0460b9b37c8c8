"""Sphinx configuration: autodoc over the public API, myst-nb for pages and notebooks.

Built by ``make docs`` (``sphinx-build -W``, offline). Notebooks are rendered from their paired
``.ipynb`` (copied from ``notebooks/``) without execution unless ``JAXTRUST_DOCS_EXECUTE`` is set
to a myst-nb execution mode (``cache``, ``force``); executed notebooks run in smoke mode
(``JAXTRUST_SMOKE=1``), as the test suite runs them, and ``JAXTRUST_DOCS_NOTEBOOKS`` (comma
separated names) limits execution to some of them.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

from api_groups import PAGES, SUBMODULE_GROUPS, exports, problems  # noqa: E402

project = "jaxtrust"
author = "jaxtrust developers"
copyright = "2026, jaxtrust developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax served from the built site, so pages read offline (no CDN).
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# The bundled MathJax 3 (sphinx-mathjax-offline copies it into _static/mathjax).
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "alabaster"
html_title = "jaxtrust"
html_static_path: list[str] = []

# Napoleon: the library's docstrings are Google style (Args / Returns / Example / References).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Attributes sections as fields: autodoc documents the members themselves (no duplicates).
napoleon_use_ivar = True
napoleon_custom_sections = [("References", "notes"), ("Reference", "notes")]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autosummary_generate = False
add_module_names = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: rendered, not run, unless asked (the test suite runs them in smoke mode).
nb_execution_mode = os.environ.get("JAXTRUST_DOCS_EXECUTE", "off")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
# JAXTRUST_DOCS_NOTEBOOKS="spf,rsu" executes only those notebooks (the others are rendered).
_only = [n for n in os.environ.get("JAXTRUST_DOCS_NOTEBOOKS", "").split(",") if n]
if _only:
    nb_execution_excludepatterns = [
        f"notebooks/{p.stem}.ipynb"
        for p in (ROOT / "notebooks").glob("*.ipynb")
        if p.stem not in _only
    ]
if nb_execution_mode != "off":
    os.environ.setdefault("JAXTRUST_SMOKE", "1")
    os.environ["XLA_FLAGS"] = ""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def _entry(module_name: str, name: str) -> str:
    obj = getattr(importlib.import_module(module_name), name)
    if isinstance(obj, type):
        return f".. autoclass:: {name}\n   :members:\n"
    if callable(obj):
        return f".. autofunction:: {name}\n"
    # Constants carry no docstring of their own (autodoc would show their type's): show the value.
    value = repr(obj) if isinstance(obj, (str, int, float, tuple, frozenset)) else None
    if isinstance(obj, dict):
        value = "{" + ", ".join(repr(k) for k in obj) + "}  (keys)"
    lines = [f".. py:data:: {name}", f"   :type: {type(obj).__name__}", ""]
    if value is not None and len(value) <= 400:
        lines += ["   .. code-block:: python", "", f"      {value}", ""]
    else:
        lines += [f"   A ``{type(obj).__name__}``; see the module docstring above.", ""]
    return "\n".join(lines)


def _group(title: str, module_name: str, names: list[str]) -> str:
    lines = [title, "-" * len(title), "", f".. currentmodule:: {module_name}", ""]
    lines += [".. autosummary::", "   :nosignatures:", ""]
    module = importlib.import_module(module_name)
    lines += [f"   {n}" for n in names if callable(getattr(module, n))] + [""]
    lines += [_entry(module_name, n) for n in names]
    return "\n".join(lines) + "\n"


def write_api_pages(out: Path) -> None:
    """Write ``api/<slug>.rst`` for every page of :data:`PAGES` (generated, not committed)."""
    found = problems()
    if found:
        raise RuntimeError("API reference out of date:\n" + "\n".join(found))
    out.mkdir(parents=True, exist_ok=True)
    toc = []
    for slug, title, module_name, intro, groups in PAGES:
        text = [title, "=" * len(title), "", intro, ""]
        text += [f".. automodule:: {module_name}", ""]
        if module_name in SUBMODULE_GROUPS:
            for group_title, sub in SUBMODULE_GROUPS[module_name]:
                text += [f".. automodule:: {sub}", "   :no-index:", ""]
                text.append(_group(group_title, sub, exports(sub)))
        else:
            text += [_group(t, module_name, names) for t, names in groups]
        page = "\n".join(text)
        path = out / f"{slug}.rst"
        if not path.exists() or path.read_text() != page:
            path.write_text(page)
        toc.append(slug)
    index = ["API reference", "=============", ""]
    index += [
        "Every public name of the library, one page per package, grouped by what it is for.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    index += [f"   {s}" for s in toc]
    page = "\n".join(index) + "\n"
    if not (out / "index.rst").exists() or (out / "index.rst").read_text() != page:
        (out / "index.rst").write_text(page)


def copy_notebooks(out: Path) -> None:
    """The paired ``.ipynb`` of every notebook (the jupytext ``.py`` is the source)."""
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
        dst = out / src.name
        nb = json.loads(src.read_text())
        # jupytext writes no language_info; the highlighter needs it.
        nb.setdefault("metadata", {}).setdefault(
            "language_info", {"name": "python", "pygments_lexer": "ipython3"}
        )
        text = json.dumps(nb, indent=1) + "\n"
        if not dst.exists() or dst.read_text() != text:
            dst.write_text(text)


write_api_pages(DOCS / "api")
copy_notebooks(DOCS / "notebooks")
