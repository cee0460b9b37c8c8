"""The server side of the encrypted ensemble argmax: compiled circuit + evaluation keys only.

Deployment (SecPE's split, in TFHE; the client/server API of Concrete's deployment guide):

1. dev: :func:`build_deployment` compiles the sum-then-argmax circuit for (m prompts, k classes,
   bits, variant) and saves ``server.zip`` + ``manifest.json`` (no keys exist yet).
2. server: :meth:`ArgmaxServer.load`, sends :meth:`ArgmaxServer.client_specs` to the client.
3. client (:class:`jaxtrust.fhe.client.ArgmaxClient`): generates keys, keeps the secret key, sends
   the evaluation keys; the server installs them with :meth:`ArgmaxServer.set_evaluation_keys`.
4. client encrypts, server :meth:`ArgmaxServer.run` (sum over prompts + argmax, encrypted),
   client decrypts.

The server never holds a secret key or a plaintext; its messages carry the circuit id and key-set
id so that a ciphertext from another key set or circuit is refused with a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxtrust.fhe._backend import require_concrete
from jaxtrust.fhe._messages import digest, pack, unpack
from jaxtrust.fhe.circuits import (
    DEFAULT_ARGMAX_VARIANT,
    circuit_stats,
    compile_argmax,
    parse_variant,
)

SERVER_FILE = "server.zip"
MANIFEST_FILE = "manifest.json"


def build_deployment(
    directory: str | os.PathLike,
    *,
    prompts: int,
    classes: int,
    bits: int,
    variant: str = DEFAULT_ARGMAX_VARIANT,
) -> Path:
    """Compile the circuit and save ``server.zip`` + ``manifest.json`` into ``directory``.

    Returns:
      The directory, loadable with :meth:`ArgmaxServer.load` (in any process with Concrete).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    circuit = compile_argmax(prompts=prompts, classes=classes, bits=bits, variant=variant)
    circuit.server.save(str(directory / SERVER_FILE))
    manifest = {
        "prompts": int(prompts),
        "classes": int(classes),
        "bits": int(bits),
        "variant": variant,
        "stats": circuit_stats(circuit),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return directory


class ArgmaxServer:
    """Holds the compiled circuit and (once sent) the client's evaluation keys; never a secret
    key."""

    def __init__(self, server: Any, manifest: dict[str, Any]):
        self._fhe = require_concrete()
        self._server = server
        self.manifest = manifest
        self.structure, self.strategy = parse_variant(manifest["variant"])
        self._specs = server.client_specs.serialize()
        self.circuit_id = digest(self._specs)
        self._evaluation_keys = None
        self.key_id: str | None = None

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ArgmaxServer:
        """Load a deployment written by :func:`build_deployment`."""
        fhe = require_concrete()
        directory = Path(directory)
        missing = [
            name for name in (SERVER_FILE, MANIFEST_FILE) if not (directory / name).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"deployment directory {directory} lacks {missing}; create it with build_deployment"
            )
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        return cls(fhe.Server.load(str(directory / SERVER_FILE)), manifest)

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.manifest.get("stats", {}))

    def client_specs(self) -> bytes:
        """What the client needs to generate keys and encrypt: Concrete's client specs +
        manifest."""
        header = {key: self.manifest[key] for key in ("prompts", "classes", "bits", "variant")}
        return pack(
            "client_specs",
            {**header, "circuit_id": self.circuit_id},
            self._specs.encode() if isinstance(self._specs, str) else self._specs,
        )

    def set_evaluation_keys(self, message: bytes) -> None:
        """Install the client's evaluation keys (a message from
        ``ArgmaxClient.evaluation_keys``)."""
        header, payload = unpack(message, "evaluation_keys")
        if header.get("circuit_id") != self.circuit_id:
            raise ValueError(
                f"evaluation keys were generated for circuit {header.get('circuit_id')}, this "
                f"server runs circuit {self.circuit_id}"
            )
        self._evaluation_keys = self._fhe.EvaluationKeys.deserialize(payload)
        self.key_id = header["key_id"]

    def run(self, message: bytes) -> bytes:
        """Sum over prompts and argmax on an encrypted input message; returns the encrypted output
        message."""
        header, payload = unpack(message, "input")
        if self._evaluation_keys is None:
            raise KeyError(
                "no evaluation keys on this server: call set_evaluation_keys with the client's "
                "keys first"
            )
        if header.get("circuit_id") != self.circuit_id:
            raise ValueError(
                f"ciphertext was made for circuit {header.get('circuit_id')}, this server runs "
                f"circuit {self.circuit_id} (k, m, bits or variant differ)"
            )
        if header.get("key_id") != self.key_id:
            raise ValueError(
                f"ciphertext was encrypted under key set {header.get('key_id')}, but this server "
                f"holds evaluation keys {self.key_id}: "
                "the client must send its own evaluation keys"
            )
        result = self._server.run(
            self._fhe.Value.deserialize(payload), evaluation_keys=self._evaluation_keys
        )
        return pack(
            "output", {"circuit_id": self.circuit_id, "key_id": self.key_id}, result.serialize()
        )
