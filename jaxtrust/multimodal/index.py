# ruff: noqa: F722
"""Exact maximum-inner-product search over a knowledge base of embeddings, on one device or
sharded over many.

An :class:`InnerProductIndex` is an immutable pair of ``[n, d]`` embeddings (unit norm for
cosine retrieval, as FAISS's ``IndexFlatIP`` over normalised CLIP embeddings in AQUA) and the
``[n]`` item ids they stand for; :func:`add` returns a new index with more rows (inserting
watermarks into a base). :func:`search` returns, for each query :math:`q`, the ``k`` rows with
the largest :math:`\\langle q, e_i \\rangle`, best first.

:func:`sharded_search` splits the rows over the ``data`` axis of a device mesh
(``jax.jit`` + ``NamedSharding``): every device scores its own rows and keeps its local top-k,
then the ``devices x k`` candidates are merged into the global top-k. The result equals the
single-device search (up to ties), with memory per device ``n / devices``.

Example:
  >>> import numpy as np
  >>> index = build_index(np.eye(4, dtype=np.float32), ids=np.array([10, 11, 12, 13]))
  >>> search(index, np.array([[0.0, 1.0, 0.5, 0.0]], np.float32), k=2).ids.tolist()
  [[11, 12]]
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import ArrayLike, Float, Int

__all__ = ["InnerProductIndex", "SearchResult", "add", "build_index", "search", "sharded_search"]


class InnerProductIndex(NamedTuple):
    """Rows to search and the item id of each row."""

    embeddings: Float[np.ndarray, "n dim"]
    ids: Int[np.ndarray, " n"]

    @property
    def size(self) -> int:
        return int(self.embeddings.shape[0])


class SearchResult(NamedTuple):
    """Per query, the ``k`` best rows: ``scores`` (inner products, descending), their item
    ``ids`` and ``rows`` (positions in the index)."""

    scores: Float[np.ndarray, "q k"]
    ids: Int[np.ndarray, "q k"]
    rows: Int[np.ndarray, "q k"]


def _as_embeddings(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [n, dim], got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a float array, got {x.dtype}")
    return x.astype(np.float32, copy=False)


def build_index(
    embeddings: Float[ArrayLike, "n dim"], ids: Int[ArrayLike, " n"] | None = None
) -> InnerProductIndex:
    """An index over ``embeddings`` (ids default to ``0..n-1``).

    Raises:
      ValueError: no rows (an empty knowledge base), or ``ids`` of the wrong length.
    """
    e = _as_embeddings(embeddings, "embeddings")
    if e.shape[0] == 0:
        raise ValueError("embeddings is empty: a knowledge base needs at least one item")
    ids = np.arange(e.shape[0]) if ids is None else np.asarray(ids)
    if ids.shape != (e.shape[0],) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be {e.shape[0]} integers, got {ids.dtype}{ids.shape}")
    return InnerProductIndex(e, ids.astype(np.int64))


def add(
    index: InnerProductIndex, embeddings: Float[ArrayLike, "m dim"], ids: Int[ArrayLike, " m"]
) -> InnerProductIndex:
    """A new index with ``embeddings`` (item ``ids``) appended."""
    if not isinstance(index, InnerProductIndex):
        raise TypeError(f"index must be an InnerProductIndex, got {type(index).__name__}")
    e = _as_embeddings(embeddings, "embeddings")
    ids = np.asarray(ids)
    if e.shape[1] != index.embeddings.shape[1]:
        raise ValueError(f"embeddings have dim {e.shape[1]}, the index {index.embeddings.shape[1]}")
    if ids.shape != (e.shape[0],):
        raise ValueError(f"ids must have shape ({e.shape[0]},), got {ids.shape}")
    return InnerProductIndex(
        np.concatenate([index.embeddings, e]), np.concatenate([index.ids, ids.astype(np.int64)])
    )


def _check_query(index: InnerProductIndex, queries, k: int) -> np.ndarray:
    if not isinstance(index, InnerProductIndex):
        raise TypeError(f"index must be an InnerProductIndex, got {type(index).__name__}")
    q = _as_embeddings(queries, "queries")
    if q.shape[1] != index.embeddings.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]}, the index {index.embeddings.shape[1]}")
    if not isinstance(k, int | np.integer) or not 1 <= k <= index.size:
        raise ValueError(f"k must be an int in [1, {index.size}] (the index size), got {k!r}")
    return q


@partial(jax.jit, static_argnames=("k",))
def _top_k(embeddings, queries, k: int):
    scores = queries @ embeddings.T
    return jax.lax.top_k(scores, k)


def search(index: InnerProductIndex, queries: Float[ArrayLike, "q dim"], *, k: int) -> SearchResult:
    """Exact top-``k`` rows by inner product for every query (one device).

    Args:
      index: the :class:`InnerProductIndex`.
      queries: ``[q, dim]`` query embeddings.
      k: rows per query, ``1 <= k <= index.size``.

    Returns:
      A :class:`SearchResult`.
    """
    q = _check_query(index, queries, k)
    scores, rows = _top_k(jnp.asarray(index.embeddings), jnp.asarray(q), int(k))
    rows = np.asarray(rows)
    return SearchResult(np.asarray(scores), index.ids[rows], rows)


@partial(jax.jit, static_argnames=("k",))
def _sharded_top_k(blocks, valid, queries, k: int):
    # blocks [S, m, d] sharded over S: each device scores and ranks only its own rows.
    shards, m, _ = blocks.shape
    scores = jnp.einsum("smd,qd->sqm", blocks, queries)
    scores = jnp.where(valid[:, None, :], scores, -jnp.inf)
    local = min(k, m)
    top_scores, top_rows = jax.lax.top_k(scores, local)  # [S, q, local]
    top_rows = top_rows + (jnp.arange(shards) * m)[:, None, None]
    nq = queries.shape[0]
    cand_scores = jnp.transpose(top_scores, (1, 0, 2)).reshape(nq, shards * local)
    cand_rows = jnp.transpose(top_rows, (1, 0, 2)).reshape(nq, shards * local)
    best, pos = jax.lax.top_k(cand_scores, k)
    return best, jnp.take_along_axis(cand_rows, pos, axis=1)


def sharded_search(
    index: InnerProductIndex,
    queries: Float[ArrayLike, "q dim"],
    *,
    k: int,
    mesh: Mesh,
    axis: str = "data",
) -> SearchResult:
    """:func:`search` with the index rows split over the ``axis`` devices of ``mesh``.

    Rows are zero-padded to a multiple of the axis size and the padding is masked out, so any
    index size works. Queries are replicated.

    Args:
      index, queries, k: as in :func:`search`.
      mesh: a device mesh (e.g. :func:`jaxtrust.training.make_mesh`).
      axis: the mesh axis the rows are split over.

    Returns:
      A :class:`SearchResult` equal to :func:`search`'s (up to the order of tied scores).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {mesh.axis_names}")
    q = _check_query(index, queries, k)
    shards = int(mesh.shape[axis])
    n, d = index.embeddings.shape
    m = -(-n // shards)
    padded = np.zeros((shards * m, d), np.float32)
    padded[:n] = index.embeddings
    valid = np.zeros(shards * m, bool)
    valid[:n] = True
    row_sharding = NamedSharding(mesh, PartitionSpec(axis))
    blocks = jax.device_put(padded.reshape(shards, m, d), row_sharding)
    valid = jax.device_put(valid.reshape(shards, m), row_sharding)
    replicated = NamedSharding(mesh, PartitionSpec())
    scores, rows = _sharded_top_k(blocks, valid, jax.device_put(q, replicated), int(k))
    rows = np.asarray(rows)
    return SearchResult(np.asarray(scores), index.ids[rows], rows)
