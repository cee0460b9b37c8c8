"""Finding the separate Python environments the FHE backends run in.

Concrete pins numpy 1.26 and OpenFHE's wheel carries a CPython 3.10 extension, so neither can be
imported next to jax 0.10 / numpy 2. Each backend therefore lives in an environment of its own,
and :mod:`jaxtrust.fhe.delegation` runs its entry points there. An environment is named by a
:class:`Backend`; it is found, in this order:

1. ``$JAXTRUST_<NAME>_PYTHON``: a Python executable (must be a file);
2. ``$JAXTRUST_<NAME>_VENV``: a virtual environment folder (``bin/python`` inside it);
3. a folder ``.venv-<name>`` next to the current working directory or one of its parents, or
   next to the running interpreter's project (the folder that holds the running ``.venv``).

No source checkout is assumed (an installed wheel finds ``.venv-fhe`` the same way); when none is
found the error names the two variables and the ``make setup`` target that builds it.

Example:
  >>> FHE.python_var, FHE.venv_var, FHE.folder
  ('JAXTRUST_FHE_PYTHON', 'JAXTRUST_FHE_VENV', '.venv-fhe')
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BACKENDS",
    "CKKS",
    "FHE",
    "Backend",
    "EnvironmentNotFoundError",
    "environment_status",
    "find_python",
    "module_available_here",
]


class EnvironmentNotFoundError(ImportError):
    """No environment for a backend: its module is not importable here and none was found."""


class Backend(NamedTuple):
    """A backend that runs in its own environment.

    Attributes:
      name: short name (``"fhe"``, ``"ckks"``); the variables are ``JAXTRUST_<NAME>_PYTHON`` and
        ``JAXTRUST_<NAME>_VENV`` and the folder ``.venv-<name>``.
      module: the import that proves the backend works (``"concrete.fhe"``, ``"openfhe"``).
      install: how to build the environment.
    """

    name: str
    module: str
    install: str

    @property
    def python_var(self) -> str:
        return f"JAXTRUST_{self.name.upper()}_PYTHON"

    @property
    def venv_var(self) -> str:
        return f"JAXTRUST_{self.name.upper()}_VENV"

    @property
    def folder(self) -> str:
        return f".venv-{self.name}"


FHE = Backend(
    "fhe",
    "concrete.fhe",
    "python3.11 -m venv .venv-fhe && .venv-fhe/bin/pip install 'jaxtrust[fhe]' "
    "(or `make setup-fhe` in a checkout)",
)
CKKS = Backend(
    "ckks",
    "openfhe",
    "`python3.10 -m venv .venv-ckks && .venv-ckks/bin/pip install openfhe numpy jaxtyping` "
    "(or `make setup-ckks` in a checkout); the caller's jaxtrust is put on its path",
)
BACKENDS: dict[str, Backend] = {b.name: b for b in (FHE, CKKS)}


def module_available_here(module: str) -> bool:
    """Whether ``module`` can be found by this interpreter (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _candidates(backend: Backend) -> list[Path]:
    """``.venv-<name>`` folders next to the working directory (and its parents) and next to the
    running interpreter's project."""
    places: list[Path] = []
    cwd = Path.cwd().resolve()
    places += [cwd, *cwd.parents]
    prefix = Path(sys.prefix).resolve()
    if prefix != Path(sys.base_prefix).resolve():  # running inside a venv: its parent folder
        places.append(prefix.parent)
    seen: set[Path] = set()
    out = []
    for place in places:
        folder = place / backend.folder
        if folder not in seen:
            seen.add(folder)
            out.append(folder)
    return out


def find_python(backend: Backend | str = FHE, *, required: bool = True) -> Path | None:
    """The interpreter of ``backend``'s environment (see the module docstring for the order).

    Args:
      backend: a :class:`Backend` or its name.
      required: raise when nothing is found (else return None).

    Returns:
      The path of a Python executable, or None (``required=False``, nothing found).

    Raises:
      EnvironmentNotFoundError: a variable names something that does not exist, or (required)
        nothing was found; the message names both variables and the install command.
      KeyError: an unknown backend name.
    """
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise KeyError(f"unknown backend {backend!r}; known: {sorted(BACKENDS)}")
        backend = BACKENDS[backend]
    configured = os.environ.get(backend.python_var)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise EnvironmentNotFoundError(
                f"${backend.python_var}={configured} is not a file: it must be the Python "
                f"executable of the {backend.name} environment"
            )
        return path
    venv = os.environ.get(backend.venv_var)
    if venv:
        path = _venv_python(Path(venv))
        if not path.is_file():
            raise EnvironmentNotFoundError(
                f"${backend.venv_var}={venv} has no {path.relative_to(venv)}: it must be a "
                f"virtual environment folder"
            )
        return path
    for folder in _candidates(backend):
        path = _venv_python(folder)
        if path.is_file():
            return path
    if not required:
        return None
    raise EnvironmentNotFoundError(
        f"the {backend.name} backend needs `{backend.module}`, which is not importable here, and "
        f"no {backend.name} environment was found: set ${backend.python_var} to its Python "
        f"executable or ${backend.venv_var} to its folder, or create {backend.folder} next to "
        f"the working directory. Install: {backend.install}"
    )


def environment_status(backend: Backend | str = FHE, *, probe: bool = True) -> dict[str, object]:
    """How ``backend`` would run from here: in this process, delegated, or not at all.

    Args:
      backend: a :class:`Backend` or its name.
      probe: check that the found interpreter can find the backend's module (a sub-second
        subprocess that imports nothing).

    Returns:
      ``{"in_process": bool, "python": str | None, "delegation": bool, "error": str | None}``.
    """
    if isinstance(backend, str):
        backend = BACKENDS[backend]
    status: dict[str, object] = {
        "in_process": module_available_here(backend.module),
        "python": None,
        "delegation": False,
        "error": None,
    }
    try:
        python = find_python(backend, required=False)
    except EnvironmentNotFoundError as err:
        status["error"] = str(err)
        return status
    if python is None:
        return status
    status["python"] = str(python)
    if not probe:
        status["delegation"] = True
        return status
    code = (
        "import importlib.util, sys\n"
        f"sys.exit(0 if importlib.util.find_spec({backend.module.split('.')[0]!r}) else 3)"
    )
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        status["error"] = f"{python} does not run: {err}"
        return status
    status["delegation"] = proc.returncode == 0
    if proc.returncode != 0:
        status["error"] = f"{python} cannot find {backend.module}"
    return status
