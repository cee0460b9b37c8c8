"""Sealed, checksummed cache entries: how every built model or asset of jaxtrust is kept.

An entry is a directory ``root / key``. It is written into a temporary sibling, sealed by a
``MANIFEST.json`` holding the SHA-256 digest of every file, then renamed into place (atomic on
one filesystem), so a crash mid-write never leaves a half entry under the final name. On load
every digest is checked before anything is read: a corrupt, partial or foreign entry is
deleted with a warning and rebuilt, never half-loaded. Nothing is ever unpickled.

Entries are found under ``cache_dir`` (argument), else ``$JAXTRUST_CACHE``, else
``~/.cache/jaxtrust/zoo``; the key is a hash of what built the entry (:func:`cache_key`).

Example:
  >>> import tempfile, pathlib
  >>> root = pathlib.Path(tempfile.mkdtemp())
  >>> def build():
  ...     return "hello", {"note": "built"}
  >>> def write(obj, folder):
  ...     (folder / "value.txt").write_text(obj)
  >>> def read(folder):
  ...     return (folder / "value.txt").read_text()
  >>> entry = cached_entry(root, cache_key("demo", {"n": 1}), build, write, read)
  >>> entry.value, entry.from_cache, entry.info["note"]
  ('hello', False, 'built')
  >>> cached_entry(root, cache_key("demo", {"n": 1}), build, write, read).from_cache
  True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "FORMAT_VERSION",
    "CachedEntry",
    "cache_key",
    "cached_entry",
    "default_cache_dir",
    "seal",
    "verify",
]

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
INFO = "info.json"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class CachedEntry(Generic[T]):
    """A loaded (or freshly built) entry.

    Attributes:
      value: what ``read`` returned, or what ``build`` built.
      info: the entry's JSON metadata (``build``'s info plus ``build_seconds``).
      path: the entry's directory.
      from_cache: whether this call loaded the entry rather than building it.
    """

    value: T
    info: dict
    path: Path
    from_cache: bool


def default_cache_dir() -> Path:
    """``$JAXTRUST_CACHE`` if set (the cache directory itself), else ``~/.cache/jaxtrust/zoo``."""
    env = os.environ.get("JAXTRUST_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/jaxtrust/zoo").expanduser()


def cache_key(kind: str, payload: Any, *, version: int = FORMAT_VERSION) -> str:
    """Entry name ``"{kind}-{sha256[:16]}"`` of ``(kind, payload, version)``.

    Args:
      kind: a short name (letters, digits, ``-`` and ``_``).
      payload: JSON-able description of everything that determines the entry (config, seed).
      version: format version; bump it when the entry's layout or recipe changes.
    """
    if (
        not isinstance(kind, str)
        or not kind
        or not kind.replace("-", "").replace("_", "").isalnum()
    ):
        raise ValueError(
            f"kind must be a non-empty name of letters, digits, '-', '_'; got {kind!r}"
        )
    text = json.dumps({"kind": kind, **_payload(payload), "format": version}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _payload(payload: Any) -> dict:
    return payload if isinstance(payload, dict) else {"payload": payload}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def seal(root: Path) -> None:
    """Write ``MANIFEST.json`` with the digest of every file under ``root``."""
    manifest = {name: _digest(root / name) for name in _files(root)}
    (root / MANIFEST).write_text(
        json.dumps({"format": FORMAT_VERSION, "files": manifest}, indent=1, sort_keys=True)
    )


def verify(root: Path) -> None:
    """Raise ``ValueError`` unless every file of the entry matches its sealed digest."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{root}: no {MANIFEST} (partial entry)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{root}: format {manifest.get('format')} != {FORMAT_VERSION}")
    expected = manifest["files"]
    present = _files(root)
    if sorted(expected) != present:
        raise ValueError(
            f"{root}: files differ from the manifest (missing "
            f"{sorted(set(expected) - set(present))[:3]}, "
            f"extra {sorted(set(present) - set(expected))[:3]})"
        )
    for name, digest in expected.items():
        if _digest(root / name) != digest:
            raise ValueError(f"{root}: {name} does not match its digest (corrupt entry)")


def _write(root: Path, key: str, write: Callable[[Path], None], info: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write(tmp)
        (tmp / INFO).write_text(json.dumps(info, indent=1, sort_keys=True))
        seal(tmp)
        if final.exists():  # a concurrent builder won the race, or a stale entry is in the way
            try:
                verify(final)
                shutil.rmtree(tmp)
                return final
            except (ValueError, OSError, KeyError, json.JSONDecodeError):
                shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def cached_entry(
    cache_dir: str | os.PathLike | None,
    key: str,
    build: Callable[[], tuple[T, dict]],
    write: Callable[[T, Path], None],
    read: Callable[[Path], T],
) -> CachedEntry[T]:
    """Load the entry ``key`` or build, write, seal and return it.

    Args:
      cache_dir: the cache root (``None``: :func:`default_cache_dir`).
      key: the entry's name (from :func:`cache_key`).
      build: ``build() -> (value, info)``; ``info`` must be JSON-able.
      write: ``write(value, folder)`` writes the value's files into a fresh folder.
      read: ``read(folder) -> value`` (called only after the digests check out).

    Returns:
      A :class:`CachedEntry`.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / key
    if path.exists():
        try:
            verify(path)
            info = json.loads((path / INFO).read_text())
            return CachedEntry(read(path), info, path, True)
        # Digests are checked before anything is read, so these are what a damaged entry
        # raises; programming errors (NameError, TypeError) propagate.
        except (ValueError, KeyError, OSError, RuntimeError, json.JSONDecodeError) as err:
            warnings.warn(f"cache entry {path} is unusable ({err}); rebuilding it", stacklevel=3)
            shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    value, info = build()
    info = {**info, "build_seconds": time.perf_counter() - start}
    path = _write(root, key, lambda folder: write(value, folder), info)
    return CachedEntry(value, info, path, False)
