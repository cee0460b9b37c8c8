"""The memorization test bed: stdlib passages, planted member datasets, in-house target LMs.

The corpus (:mod:`jaxtrust.data.stdlib_text`) is cut into byte passages and split once, with a
fixed permutation, into the *public* background every model is trained on and a *held-out*
pool. Per seed, the held-out pool gives

* member datasets, one per duplication count ``d`` (each passage of it appears ``d`` times in
  the target's training data),
* a non-member pool the null datasets are drawn from, and
* the auditor's reference set (known non-members of the same distribution),

all disjoint. A target is trained on background + members; a control of the same
architecture is trained on the background only (it has never seen any member). Models are
built with :func:`jaxtrust.training.finetune` and kept in :func:`jaxtrust.zoo.cached_entry`
entries keyed by everything that made them.

Example::

    world = build_world(WorldConfig(), seed=0)
    target = train_target(TargetSpec("llama", 64, 2), world, steps=600, seed=0).model
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxtrust.data.batching import collate
from jaxtrust.data.stdlib_text import ByteTokenizer, corpus_fingerprint, passages, stdlib_documents
from jaxtrust.models import CausalLM, LMConfig
from jaxtrust.training import adamw_cosine, finetune, load_pytree, save_pytree
from jaxtrust.zoo.cache import cache_key, cached_entry

__all__ = [
    "MemWorld",
    "TargetSpec",
    "TrainedLM",
    "WorldConfig",
    "build_world",
    "encode_split",
    "train_target",
]

TOKENIZER = ByteTokenizer()


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Sizes of the test bed.

    Attributes:
      passage_bytes: passage length in bytes.
      hint_bytes: the opening bytes a method reads (the true prefix of prefix extraction).
      background: public passages every model trains on.
      dataset_size: passages per member dataset.
      duplications: duplication counts of the member datasets.
      nonmember_pool: held-out passages the null datasets are drawn from.
      reference: the auditor's known non-members.
    """

    passage_bytes: int = 96
    hint_bytes: int = 32
    background: int = 1500
    dataset_size: int = 40
    duplications: tuple[int, ...] = (1, 2, 4, 8, 16)
    nonmember_pool: int = 200
    reference: int = 200

    def __post_init__(self):
        for name in ("passage_bytes", "hint_bytes", "background", "dataset_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.hint_bytes + 8 > self.passage_bytes:
            raise ValueError("hint_bytes must leave at least 8 bytes of reference")
        if not self.duplications or any(int(d) < 1 for d in self.duplications):
            raise ValueError(f"duplications must be positive ints, got {self.duplications}")
        if self.nonmember_pool < 4 or self.reference < 4:
            raise ValueError("nonmember_pool and reference need at least 4 passages each")


class MemWorld(NamedTuple):
    """One seed's split (texts); ``members[d]`` is the dataset duplicated ``d`` times."""

    config: WorldConfig
    seed: int
    background: list[str]
    members: dict[int, list[str]]
    nonmembers: list[str]
    reference: list[str]
    fingerprint: str


@functools.lru_cache(maxsize=4)
def _corpus(passage_bytes: int) -> tuple[tuple[str, ...], str]:
    docs = stdlib_documents()
    return tuple(passages(docs, passage_bytes)), corpus_fingerprint(docs)


def build_world(config: WorldConfig, seed: int) -> MemWorld:
    """Split the corpus for ``seed`` (the background is the same for every seed).

    Raises:
      ValueError: the corpus holds too few passages for the requested sizes.
    """
    if not isinstance(config, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(config).__name__}")
    texts, fingerprint = _corpus(config.passage_bytes)
    order = np.random.default_rng(20241210).permutation(len(texts))
    need = (
        config.background
        + config.dataset_size * len(config.duplications)
        + config.nonmember_pool
        + config.reference
    )
    if need > len(texts):
        raise ValueError(f"the world needs {need} passages, the corpus has {len(texts)}")
    background = [texts[i] for i in order[: config.background]]
    held = order[config.background :]
    held = held[np.random.default_rng(seed).permutation(len(held))]
    pos = 0
    members: dict[int, list[str]] = {}
    for d in config.duplications:
        members[int(d)] = [texts[i] for i in held[pos : pos + config.dataset_size]]
        pos += config.dataset_size
    nonmembers = [texts[i] for i in held[pos : pos + config.nonmember_pool]]
    pos += config.nonmember_pool
    reference = [texts[i] for i in held[pos : pos + config.reference]]
    return MemWorld(config, int(seed), background, members, nonmembers, reference, fingerprint)


def _seq_len(config: WorldConfig) -> int:
    # U+FFFD replacement characters can lengthen a passage by a few bytes.
    return -(-(config.passage_bytes + 8) // 8) * 8


def training_pool(texts: list[str], config: WorldConfig) -> dict[str, np.ndarray]:
    """``<bos> passage <eos>`` rows with the LM loss on every token."""
    rows = [[TOKENIZER.bos_id, *TOKENIZER.encode(t)[: _seq_len(config) - 2]] for t in texts]
    return collate(
        rows,
        [[TOKENIZER.eos_id]] * len(rows),
        pad_id=TOKENIZER.pad_id,
        seq_len=_seq_len(config),
        train_on_prompt=True,
    ).as_dict()


def encode_split(texts: list[str], config: WorldConfig) -> tuple[list[list[int]], list[list[int]]]:
    """``(hints, references)``: each passage's first ``hint_bytes`` ids and the rest."""
    if not texts:
        raise ValueError("texts is empty")
    ids = [TOKENIZER.encode(t) for t in texts]
    h = config.hint_bytes
    return [x[:h] for x in ids], [x[h : config.passage_bytes] for x in ids]


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Architecture of an in-house LM: ``arch`` is ``"llama"`` or ``"gpt_neox"`` (Pythia)."""

    arch: str
    hidden: int
    layers: int
    heads: int = 4

    def __post_init__(self):
        if self.arch not in ("llama", "gpt_neox"):
            raise ValueError(f"arch must be 'llama' or 'gpt_neox', got {self.arch!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")

    @property
    def name(self) -> str:
        return f"{'llama' if self.arch == 'llama' else 'pythia'}-{self.hidden}x{self.layers}"

    def lm_config(self) -> LMConfig:
        common = dict(
            vocab_size=TOKENIZER.vocab_size,
            hidden_size=self.hidden,
            intermediate_size=4 * self.hidden if self.arch == "gpt_neox" else 3 * self.hidden,
            num_layers=self.layers,
            num_heads=self.heads,
            head_dim=self.hidden // self.heads,
            max_position_embeddings=256,
            bos_token_id=TOKENIZER.bos_id,
            eos_token_id=(TOKENIZER.eos_id,),
            pad_token_id=TOKENIZER.pad_id,
        )
        if self.arch == "gpt_neox":
            return LMConfig.tiny("gpt_neox", num_kv_heads=self.heads, **common)
        return LMConfig.tiny("llama", num_kv_heads=max(1, self.heads // 2), **common)


class TrainedLM(NamedTuple):
    """A built (or cached) LM, with its training info (``history``, ``build_seconds``)."""

    model: Any
    info: dict
    from_cache: bool


def _write(value, folder: Path) -> None:
    save_pytree(folder / "params", nnx.state(value))


def _reader(spec: TargetSpec):
    def read(folder: Path):
        abstract = nnx.eval_shape(lambda: CausalLM(spec.lm_config(), rngs=nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract)
        state = load_pytree(folder / "params", abstract_state)
        # Match a freshly trained model's uncommitted arrays: one compile serves both.
        state = jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)), state)
        return nnx.merge(graphdef, state)

    return read


def train_target(
    spec: TargetSpec,
    world: MemWorld,
    *,
    steps: int,
    seed: int,
    members: bool = True,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    cache_dir: str | None = None,
) -> TrainedLM:
    """Train (or load) a target (``members=True``) or a control (``members=False``) LM.

    The control's entry does not depend on the world's seed: its data is the background only.
    """
    cfg = world.config
    texts = list(world.background)
    if members:
        for d, data in world.members.items():
            texts += [t for t in data for _ in range(d)]
    payload = {
        "spec": dataclasses.asdict(spec),
        "world": dataclasses.asdict(cfg),
        "corpus": world.fingerprint,
        "world_seed": world.seed if members else None,
        "members": members,
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": learning_rate,
    }

    def build():
        model = CausalLM(spec.lm_config(), rngs=nnx.Rngs(seed))
        tx = adamw_cosine(learning_rate, steps, warmup_steps=min(50, steps // 10))
        result = finetune(
            model,
            training_pool(texts, cfg),
            tx,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            step_key=("memhunter.target", learning_rate, steps, batch_size),
        )
        losses = result.losses
        return result.model, {
            "rows": len(texts),
            "final_loss": float(np.mean(losses[-20:])),
            "loss_curve": [float(x) for x in losses[:: max(1, len(losses) // 50)]],
            "train_seconds": result.seconds,
        }

    kind = "memhunter-target" if members else "memhunter-control"
    entry = cached_entry(cache_dir, cache_key(kind, payload), build, _write, _reader(spec))
    return TrainedLM(entry.value, entry.info, entry.from_cache)
