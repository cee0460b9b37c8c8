"""The client side of the encrypted ensemble argmax: quantize, encrypt, decrypt; holds the secret
key.

See :mod:`jaxtrust.fhe.server` for the protocol. Only :meth:`ArgmaxClient.evaluation_keys`,
:meth:`ArgmaxClient.encrypt` outputs leave the client; the secret key is never serialized by this
class (Concrete's ``keys.save`` exists for local persistence and is not wrapped here).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxtrust.fhe._backend import require_concrete
from jaxtrust.fhe._messages import digest, pack, unpack
from jaxtrust.fhe.circuits import decode_output, parse_variant
from jaxtrust.fhe.quantize import check_quantized, quantize_scores


class ArgmaxClient:
    """Generates keys for a deployed argmax circuit, encrypts [m, k] integers, decrypts the argmax.

    Args:
      client_specs: the message from ``ArgmaxServer.client_specs()``.
      key_cache_dir: Concrete's insecure key cache (tests only: the same keys every time).

    Example:
      >>> client = ArgmaxClient(server.client_specs())  # doctest: +SKIP
      >>> server.set_evaluation_keys(client.generate_keys().evaluation_keys())
      >>> client.decrypt(server.run(client.encrypt(q)))
    """

    def __init__(self, client_specs: bytes, *, key_cache_dir: str | os.PathLike | None = None):
        fhe = require_concrete()
        header, payload = unpack(client_specs, "client_specs")
        self._fhe = fhe
        self.prompts, self.classes, self.bits = (
            int(header["prompts"]),
            int(header["classes"]),
            int(header["bits"]),
        )
        self.variant = header["variant"]
        self.structure, _ = parse_variant(self.variant)
        self.circuit_id = header["circuit_id"]
        if digest(payload) != self.circuit_id:
            raise ValueError("client specs do not match their circuit id (corrupt message)")
        specs = fhe.ClientSpecs.deserialize(payload)
        cache = None if key_cache_dir is None else str(key_cache_dir)
        self._client = fhe.Client(specs, keyset_cache_directory=cache)
        self._evaluation_keys: bytes | None = None
        self.key_id: str | None = None

    def generate_keys(self) -> ArgmaxClient:
        """Generate the secret and evaluation keys (minutes and GBs at 8 bits)."""
        self._client.keys.generate()
        self._evaluation_keys = self._client.evaluation_keys.serialize()
        self.key_id = digest(self._evaluation_keys)
        return self

    def _require_keys(self) -> None:
        if self._evaluation_keys is None:
            raise KeyError("this client has no keys yet: call generate_keys() first")

    def evaluation_keys(self) -> bytes:
        """The public evaluation keys, for the server (no secret material)."""
        self._require_keys()
        return pack(
            "evaluation_keys",
            {"circuit_id": self.circuit_id, "key_id": self.key_id},
            self._evaluation_keys,
        )

    def quantize(self, scores: np.ndarray) -> np.ndarray:
        """:func:`~jaxtrust.fhe.quantize.quantize_scores` for this circuit's bit width; [n, m, k]
        ints."""
        return quantize_scores(scores, self.bits)[0]

    def encrypt(self, quantized: np.ndarray) -> bytes:
        """Encrypt one input's [m, k] integers (from :meth:`quantize`) into an input message."""
        self._require_keys()
        q = check_quantized(quantized, prompts=self.prompts, classes=self.classes, bits=self.bits)
        if q.ndim != 2:
            raise ValueError(
                f"encrypt takes one input of shape (m={self.prompts}, k={self.classes}), got "
                f"{q.shape}"
            )
        value = self._client.encrypt(q)
        return pack(
            "input", {"circuit_id": self.circuit_id, "key_id": self.key_id}, value.serialize()
        )

    def decrypt(self, message: bytes) -> int:
        """Decrypt an output message to the class index (lowest index among ties)."""
        self._require_keys()
        header, payload = unpack(message, "output")
        if header.get("key_id") != self.key_id or header.get("circuit_id") != self.circuit_id:
            raise ValueError(
                f"output was computed under key set {header.get('key_id')}, this client holds "
                f"{self.key_id}"
            )
        out: Any = self._client.decrypt(self._fhe.Value.deserialize(payload))
        return decode_output(out, self.structure)
