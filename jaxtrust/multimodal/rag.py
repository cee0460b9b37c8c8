"""Multimodal retrieval-augmented generation: a retriever, an image knowledge base, a generator.

A :class:`RAGSystem` answers a text query as AQUA's RAG-as-a-service does: embed the query with
the retriever's text tower, take the top-``k`` knowledge-base images by inner product
(:func:`jaxtrust.multimodal.index.search`), and let the vision-language generator answer from
those ``k`` images plus the query. Only the text answer leaves the service.

The system is an immutable value: :func:`insert` returns a new system whose base holds more
images (a data provider's contribution, or a watermark). The knowledge base keeps, per item,
the image (uint8), its retriever embedding (a row of the index) and the generator's vision
features (computed once, as a deployed VLM caches them; the generator's vision tower is fixed
at serving time).

Example::

    system = build_system(retriever, vlm, kb_images, query_tokenizer=tok, answer_tokenizer=tok,
                          k=3)
    system, ids = insert(system, watermark_images)
    answers = rag_answer(system, ["who is q z x ?"]).answers
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxtrust.multimodal.index import InnerProductIndex, SearchResult, add, build_index, search
from jaxtrust.multimodal.render import check_images
from jaxtrust.multimodal.retriever import Retriever, embed_images, embed_texts, tokenize_texts
from jaxtrust.multimodal.vlm import VisionLanguageModel, answer, image_features

__all__ = ["RAGAnswers", "RAGSystem", "build_system", "embed_queries", "insert", "rag_answer"]


@dataclasses.dataclass(frozen=True)
class RAGSystem:
    """A deployed multimodal RAG service (see the module docstring).

    Attributes:
      retriever: the two-tower retriever.
      generator: the vision-language model.
      index: retriever embeddings of the base (ids = rows of the stores).
      images: ``[n, h, w, 3]`` uint8 store.
      features: ``[n, T, d]`` generator vision features of the store.
      query_tokenizer, answer_tokenizer: tokenizers of the two models.
      k: images retrieved per query.
      max_query_len: token length of retriever queries.
      max_new_tokens: answer length limit.
    """

    retriever: Retriever
    generator: VisionLanguageModel
    index: InnerProductIndex
    images: np.ndarray
    features: np.ndarray
    query_tokenizer: Any
    answer_tokenizer: Any
    k: int = 3
    max_query_len: int = 48
    max_new_tokens: int = 8

    @property
    def size(self) -> int:
        return self.index.size


def _uint8(images: np.ndarray, size: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"images must have shape [n, {size}, {size}, 3], got {images.shape}")
        if len(images) == 0:
            raise ValueError("images is empty")
        return images
    return np.round(check_images(images, size=size) * 255).astype(np.uint8)


def build_system(
    retriever: Retriever,
    generator: VisionLanguageModel,
    images: np.ndarray,
    *,
    query_tokenizer: Any,
    answer_tokenizer: Any,
    k: int = 3,
    max_query_len: int = 48,
    max_new_tokens: int = 8,
) -> RAGSystem:
    """Index ``images`` (uint8 or float in [0, 1], ``[n, h, w, 3]``) into a new service.

    Raises:
      ValueError: an empty base, images of the wrong size or mode, ``k`` out of range.
    """
    size = retriever.config.image_size
    if generator.config.image_size != size:
        raise ValueError("retriever and generator take different image sizes")
    images = _uint8(images, size)
    if not isinstance(k, int) or not 1 <= k <= len(images):
        raise ValueError(f"k must be an int in [1, {len(images)}], got {k!r}")
    index = build_index(embed_images(retriever, images))
    features = image_features(generator, images).astype(np.float16)
    return RAGSystem(
        retriever,
        generator,
        index,
        images,
        features,
        query_tokenizer,
        answer_tokenizer,
        k,
        max_query_len,
        max_new_tokens,
    )


def insert(system: RAGSystem, images: np.ndarray) -> tuple[RAGSystem, np.ndarray]:
    """A new system whose base also holds ``images``; returns it and the new items' ids."""
    images = _uint8(images, system.retriever.config.image_size)
    ids = np.arange(system.images.shape[0], system.images.shape[0] + len(images))
    index = add(system.index, embed_images(system.retriever, images), ids)
    features = image_features(system.generator, images).astype(system.features.dtype)
    return (
        dataclasses.replace(
            system,
            index=index,
            images=np.concatenate([system.images, images]),
            features=np.concatenate([system.features, features]),
        ),
        ids,
    )


def embed_queries(system: RAGSystem, queries: Sequence[str]) -> np.ndarray:
    """Unit-norm retriever embeddings of text queries."""
    text = tokenize_texts(system.query_tokenizer, list(queries), max_len=system.max_query_len)
    return embed_texts(system.retriever, text)


class RAGAnswers(NamedTuple):
    """Generated answers and what was retrieved for each query."""

    answers: list[str]
    search: SearchResult


def rag_answer(
    system: RAGSystem,
    queries: Sequence[str],
    *,
    query_filter: Callable[[np.ndarray], np.ndarray] | None = None,
    refusal: str = "",
) -> RAGAnswers:
    """Answer ``queries`` through retrieval and generation.

    Args:
      system: the service.
      queries: text queries.
      query_filter: optional service-side defence, ``filter(query_embeddings) -> bool [q]``
        (True = serve); rejected queries get ``refusal`` and no generation.
      refusal: the answer to a rejected query.

    Returns:
      :class:`RAGAnswers` (answers in query order, and the top-``k`` search of every query).
    """
    if isinstance(queries, str) or not isinstance(queries, Sequence) or not queries:
        raise ValueError("queries must be a non-empty sequence of strings")
    q = embed_queries(system, queries)
    found = search(system.index, q, k=system.k)
    served = np.ones(len(queries), bool) if query_filter is None else np.asarray(query_filter(q))
    answers = [refusal] * len(queries)
    keep = np.flatnonzero(served)
    if len(keep):
        feats = system.features[found.ids[keep]]
        out = answer(
            system.generator,
            system.answer_tokenizer,
            [queries[i] for i in keep],
            features=feats.astype(np.float32),
            max_new_tokens=system.max_new_tokens,
        )
        for i, text in zip(keep, out, strict=True):
            answers[i] = text
    return RAGAnswers(answers, found)
