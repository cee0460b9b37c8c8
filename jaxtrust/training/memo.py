"""Memoised construction of compiled programs (train steps, inner loops, scorers).

Building a jitted step for a model graph and a recipe is cheap, but its *first call* compiles;
a method that fine-tunes many copies of one model (every attack and method of a reproduction,
every candidate of a search) should build each program once. :func:`memoize` keeps them in one
bounded, least-recently-used table keyed by ``(namespace, key)``, so every method shares one
policy instead of writing its own module-level dict.

Keys must be hashable and must determine the program: include the ``nnx.GraphDef`` and every
hyperparameter the program closes over (a learning rate baked into an optax chain, a rank, a
regex). Shapes need not be in the key: ``jax.jit`` re-specialises on new shapes by itself.

Example:
  >>> import jax
  >>> square = memoize("doc", ("square",), lambda: jax.jit(lambda x: x * x))
  >>> square is memoize("doc", ("square",), lambda: None)
  True
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["clear_memo", "memo_size", "memoize"]

T = TypeVar("T")

MAX_ENTRIES = 64
_TABLE: OrderedDict[tuple[str, Hashable], object] = OrderedDict()
_LOCK = threading.Lock()


def memoize(namespace: str, key: Hashable, build: Callable[[], T]) -> T:
    """Return the program stored under ``(namespace, key)``, building it on first use.

    Args:
      namespace: who owns the entry (e.g. ``"finetune"``, ``"spf.reproduce"``).
      key: hashable description of everything the program depends on.
      build: zero-argument constructor, called at most once per key while it stays cached.

    Returns:
      The stored (or newly built) object.

    Raises:
      TypeError: ``key`` is not hashable.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    full = (namespace, key)
    try:
        hash(full)
    except TypeError as err:
        raise TypeError(f"key must be hashable (got {key!r}): {err}") from None
    with _LOCK:
        if full in _TABLE:
            _TABLE.move_to_end(full)
            return _TABLE[full]  # type: ignore[return-value]
    value = build()
    with _LOCK:
        _TABLE[full] = value
        _TABLE.move_to_end(full)
        while len(_TABLE) > MAX_ENTRIES:
            _TABLE.popitem(last=False)
    return value


def clear_memo(namespace: str | None = None) -> None:
    """Drop every entry (or those of one namespace)."""
    with _LOCK:
        for full in [k for k in _TABLE if namespace is None or k[0] == namespace]:
            del _TABLE[full]


def memo_size(namespace: str | None = None) -> int:
    """Number of stored entries (of one namespace)."""
    with _LOCK:
        return sum(1 for k in _TABLE if namespace is None or k[0] == namespace)
