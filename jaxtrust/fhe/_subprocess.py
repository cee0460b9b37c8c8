"""Run an FHE entry point in the fhe environment when Concrete is not importable here.

The main environment (jax 0.10, numpy 2) cannot import Concrete (numpy 1.26 pin), so
:func:`delegate` starts ``python -m jaxtrust.fhe._subprocess <dir>`` under the fhe interpreter
(``$JAXTRUST_FHE_PYTHON``, else ``<repo>/.venv-fhe/bin/python`` when it exists). Arrays cross as
``.npz`` (loaded with ``allow_pickle=False``) and everything else as JSON; never pickle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrust.fhe._backend import INSTALL_HINT, ConcreteUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "JAXTRUST_FHE_PYTHON"


def fhe_python() -> Path | None:
    """The fhe environment's interpreter, or None when there is none."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ConcreteUnavailableError(f"${ENV_VAR}={configured} is not a file. {INSTALL_HINT}")
        return path
    default = REPO_ROOT / ".venv-fhe" / "bin" / "python"
    return default if default.is_file() else None


def _entry_points() -> dict[str, Any]:
    from jaxtrust.fhe import argmax, verbalizer

    return {
        "encrypted_ensemble_argmax": lambda arrays, kw: argmax.encrypted_ensemble_argmax(
            arrays["scores"], **kw
        ).to_payload(),
        "argmax_grid": lambda arrays, kw: ({}, {"rows": argmax.argmax_grid(**kw)}),
        "encrypted_verbalizer": lambda arrays, kw: verbalizer.encrypted_verbalizer(
            arrays["hidden"],
            arrays["weights"],
            **({"bias": arrays["bias"]} if "bias" in arrays else {}),
            **kw,
        ).to_payload(),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def delegate(
    name: str,
    arrays: dict[str, np.ndarray],
    kwargs: dict[str, Any],
    *,
    timeout: float | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run entry point ``name`` in the fhe environment; returns its (arrays, JSON metadata)."""
    python = fhe_python()
    if python is None:
        raise ConcreteUnavailableError(
            f"{INSTALL_HINT} (or set ${ENV_VAR} to an interpreter that has it)"
        )
    with tempfile.TemporaryDirectory(prefix="jaxtrust-fhe-call-") as tmp:
        tmp_path = Path(tmp)
        np.savez(tmp_path / "inputs.npz", **arrays)
        (tmp_path / "request.json").write_text(
            json.dumps({"name": name, "kwargs": _jsonable(kwargs)})
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.pop(
            "XLA_FLAGS", None
        )  # the worker never runs jax code; keep it single-device and quiet
        proc = subprocess.run(
            [str(python), "-m", "jaxtrust.fhe._subprocess", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        result_file = tmp_path / "result.json"
        if not result_file.is_file():
            raise RuntimeError(
                f"fhe worker ({python}) failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}"
            )
        result = json.loads(result_file.read_text())
        if "error" in result:
            error_type = {
                "ValueError": ValueError,
                "TypeError": TypeError,
                "KeyError": KeyError,
            }.get(result["error"]["type"], RuntimeError)
            raise error_type(f"{result['error']['message']} (raised in the fhe environment)")
        with np.load(tmp_path / "outputs.npz", allow_pickle=False) as data:
            out_arrays = {key: data[key] for key in data.files}
        return out_arrays, result["meta"]


def _worker(directory: Path) -> None:
    request = json.loads((directory / "request.json").read_text())
    with np.load(directory / "inputs.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    try:
        out_arrays, meta = _entry_points()[request["name"]](arrays, request["kwargs"])
    except (ValueError, TypeError, KeyError) as err:
        (directory / "result.json").write_text(
            json.dumps({"error": {"type": type(err).__name__, "message": str(err)}})
        )
        return
    np.savez(directory / "outputs.npz", **{key: np.asarray(v) for key, v in out_arrays.items()})
    (directory / "result.json").write_text(json.dumps({"meta": _jsonable(meta)}))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
