"""Run a named FHE entry point here, or in its backend's own environment when that is not here.

:func:`call` is the one place that decides: when the backend's module (``concrete.fhe``,
``openfhe``) imports in this interpreter, the entry point runs in process; otherwise the
environment is located (:func:`jaxtrust.fhe.environment.find_python`) and
``python -m jaxtrust.fhe._worker <dir>`` runs it there. Arrays cross as ``.npz`` (read with
``allow_pickle=False``) and everything else as JSON; nothing is pickled. The worker runs the
caller's own jaxtrust (a link to this package's folder heads its ``PYTHONPATH``), so both sides
always speak the same version, whether jaxtrust is a checkout or an installed wheel.

Example::

    arrays, meta = call("argmax_grid", {}, {"ks": [4], "bits": [4], "variants": ["tree"]})
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrust.fhe.environment import BACKENDS, find_python, module_available_here
from jaxtrust.fhe.registry import ENTRY_POINTS, Payload, resolve

__all__ = ["call", "delegate", "jsonable"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the jaxtrust package folder itself
_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "FileNotFoundError": FileNotFoundError,
}


def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars and arrays turned into JSON values (recursively)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def call(
    name: str,
    arrays: dict[str, np.ndarray],
    kwargs: dict[str, Any],
    *,
    timeout: float | None = None,
    force_subprocess: bool = False,
) -> Payload:
    """Run entry point ``name`` (see :data:`jaxtrust.fhe.registry.ENTRY_POINTS`).

    Args:
      name: the entry point.
      arrays: NumPy inputs; kwargs: JSON-able keyword arguments.
      timeout: seconds before a delegated run is killed (``subprocess.TimeoutExpired``).
      force_subprocess: delegate even when the backend imports here (tests, fresh memory).

    Returns:
      ``(arrays, meta)`` of the entry point.

    Raises:
      KeyError: unknown entry point. EnvironmentNotFoundError: the backend is neither here nor
      found. ValueError / TypeError / KeyError raised by the entry point, also across processes.
    """
    if name not in ENTRY_POINTS:
        raise KeyError(f"unknown FHE entry point {name!r}; known: {sorted(ENTRY_POINTS)}")
    backend = BACKENDS[ENTRY_POINTS[name].backend]
    if module_available_here(backend.module) and not force_subprocess:
        out_arrays, meta = resolve(name)(dict(arrays), jsonable(kwargs))
        return {k: np.asarray(v) for k, v in out_arrays.items()}, jsonable(meta)
    return delegate(name, arrays, kwargs, timeout=timeout)


def _child_env(link_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    (link_dir / "jaxtrust").symlink_to(PACKAGE_DIR, target_is_directory=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(link_dir), env.get("PYTHONPATH", "")) if p)
    # The worker runs no multi-device jax code: keep it on one device and quiet.
    env.pop("XLA_FLAGS", None)
    return env


def delegate(
    name: str,
    arrays: dict[str, np.ndarray],
    kwargs: dict[str, Any],
    *,
    timeout: float | None = None,
) -> Payload:
    """Run entry point ``name`` in its backend's environment, in a fresh process.

    Args and Returns: as :func:`call` (which is what to use; this always starts a process).
    """
    if name not in ENTRY_POINTS:
        raise KeyError(f"unknown FHE entry point {name!r}; known: {sorted(ENTRY_POINTS)}")
    backend = BACKENDS[ENTRY_POINTS[name].backend]
    python = find_python(backend)
    with tempfile.TemporaryDirectory(prefix="jaxtrust-fhe-call-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "path").mkdir()
        np.savez(tmp_path / "inputs.npz", **arrays)
        (tmp_path / "request.json").write_text(
            json.dumps({"name": name, "kwargs": jsonable(kwargs)})
        )
        proc = subprocess.run(
            [str(python), "-m", "jaxtrust.fhe._worker", str(tmp_path)],
            capture_output=True,
            text=True,
            env=_child_env(tmp_path / "path"),
            timeout=timeout,
        )
        result_file = tmp_path / "result.json"
        if not result_file.is_file():
            raise RuntimeError(
                f"the {backend.name} worker ({python}) failed with exit code {proc.returncode}:\n"
                f"{proc.stderr[-4000:]}"
            )
        result = json.loads(result_file.read_text())
        if "error" in result:
            error_type = _ERRORS.get(result["error"]["type"], RuntimeError)
            raise error_type(
                f"{result['error']['message']} (raised in the {backend.name} environment, {python})"
            )
        with np.load(tmp_path / "outputs.npz", allow_pickle=False) as data:
            out_arrays = {key: data[key] for key in data.files}
        return out_arrays, result["meta"]
