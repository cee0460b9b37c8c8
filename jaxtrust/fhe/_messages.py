"""Wire format between the argmax client and server: a JSON header plus Concrete's own bytes.

``b"JXTFHE1\\0" | uint32 header length | UTF-8 JSON header | payload``. The header names the message
kind, the circuit (hash of the client specs) and the key set (hash of the evaluation keys), so a
server can refuse a ciphertext made under another key set or for another circuit instead of
returning garbage. No pickle anywhere: the payload is ``fhe.Value`` / ``fhe.EvaluationKeys``
serialization.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

MAGIC = b"JXTFHE1\0"
KINDS = ("client_specs", "evaluation_keys", "input", "output")


def digest(data: bytes | str) -> str:
    """Short content hash used as a circuit or key-set id."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:16]


def pack(kind: str, header: dict[str, Any], payload: bytes) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    head = json.dumps({"kind": kind, **header}, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + bytes(payload)


def unpack(message: bytes, expected_kind: str) -> tuple[dict[str, Any], bytes]:
    """Split a message; raise ValueError naming what was expected when it is not one."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError(f"message must be bytes, got {type(message).__name__}")
    message = bytes(message)
    if not message.startswith(MAGIC) or len(message) < len(MAGIC) + 4:
        raise ValueError(
            f"not a jaxtrust FHE message (expected a {expected_kind!r} message from jaxtrust.fhe)"
        )
    (size,) = struct.unpack("<I", message[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(message[start : start + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt {expected_kind!r} message header: {err}") from err
    if header.get("kind") != expected_kind:
        raise ValueError(f"expected a {expected_kind!r} message, got {header.get('kind')!r}")
    return header, message[start + size :]
