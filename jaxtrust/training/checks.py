"""Input checks that work on concrete values and inside ``jax.jit`` alike.

:func:`require` raises a ``ValueError`` at once on concrete values. Under tracing it runs as a
``jax.debug.callback`` when the compiled program runs; JAX then reports the failure as a
``JaxRuntimeError`` whose text begins with ``INTERNAL: CpuCallback error`` and buries the
message in a traceback. The callback therefore also records its message, and
:func:`host_errors` (which :func:`jaxtrust.training.fit` wraps around every step) turns such
a runtime error back into the ``ValueError`` with the message first.

Example:
  >>> import jax, jax.numpy as jnp
  >>> @jax.jit
  ... def f(x):
  ...     require(jnp.all(jnp.isfinite(x)), "x contains NaN or Inf")
  ...     return x + 1
  >>> try:
  ...     with host_errors():
  ...         jax.block_until_ready(f(jnp.array([jnp.nan])))
  ... except ValueError as err:
  ...     print(err)
  x contains NaN or Inf
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["host_errors", "require"]

_PENDING: list[str] = []
_LOCK = threading.Lock()


def _raise_first_failure(ok: Any, *, messages: tuple[str, ...], record: bool) -> None:
    ok = np.asarray(ok)
    if not ok.all():
        message = messages[int(np.argmin(ok))]
        if record:
            with _LOCK:
                _PENDING.append(message)
        raise ValueError(message)


def require(ok: Any, message: str | list[str]) -> None:
    """Raise ``ValueError(message)`` unless ``ok``, now or (under ``jax.jit``) when it runs.

    Args:
      ok: a bool or a bool vector (concrete or traced).
      message: the message, or with a vector one message per entry (the first failing entry's
        message is raised).
    """
    messages = [message] if isinstance(message, str) else list(message)
    ok = jnp.atleast_1d(jnp.asarray(ok))
    if len(messages) != ok.shape[0] and len(messages) != 1:
        raise ValueError(f"got {ok.shape[0]} checks but {len(messages)} messages")
    try:
        ok_host = np.asarray(ok)
    except jax.errors.TracerArrayConversionError:
        callback = functools.partial(_raise_first_failure, messages=tuple(messages), record=True)
        jax.debug.callback(callback, ok)
        return
    _raise_first_failure(ok_host, messages=tuple(messages), record=False)


@contextlib.contextmanager
def host_errors() -> Iterator[None]:
    """Re-raise a runtime failure of a traced :func:`require` as its ``ValueError``.

    Wrap the code that runs (or waits for) a compiled program; other runtime errors pass
    through unchanged.
    """
    with _LOCK:
        _PENDING.clear()
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        with _LOCK:
            message = _PENDING[0] if _PENDING else None
            _PENDING.clear()
        if message is None:
            raise
        raise ValueError(message) from err
