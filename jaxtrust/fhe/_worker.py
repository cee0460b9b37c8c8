"""The process :func:`jaxtrust.fhe.delegation.delegate` starts in a backend's environment.

``python -m jaxtrust.fhe._worker DIR`` reads ``DIR/request.json`` (entry point name and JSON
kwargs) and ``DIR/inputs.npz`` (``allow_pickle=False``), resolves the name through
:func:`jaxtrust.fhe.registry.resolve` (which imports only the module that defines it), and writes
``DIR/outputs.npz`` and ``DIR/result.json`` (``{"meta": ...}`` or ``{"error": {type, message}}``).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np

from jaxtrust.fhe.delegation import jsonable
from jaxtrust.fhe.registry import resolve

_PASSED_ON = (ValueError, TypeError, KeyError, FileNotFoundError)


def main(directory: Path) -> None:
    request = json.loads((directory / "request.json").read_text())
    with np.load(directory / "inputs.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    try:
        out_arrays, meta = resolve(request["name"])(arrays, request["kwargs"])
    except _PASSED_ON as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        (directory / "result.json").write_text(
            json.dumps({"error": {"type": type(err).__name__, "message": str(message)}})
        )
        return
    except Exception as err:  # anything else: keep the traceback for the caller's message
        (directory / "result.json").write_text(
            json.dumps(
                {
                    "error": {
                        "type": type(err).__name__,
                        "message": f"{type(err).__name__}: {err}\n{traceback.format_exc()[-3000:]}",
                    }
                }
            )
        )
        return
    np.savez(directory / "outputs.npz", **{key: np.asarray(v) for key, v in out_arrays.items()})
    (directory / "result.json").write_text(json.dumps({"meta": jsonable(meta)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
