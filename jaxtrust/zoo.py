"""The in-house model zoo: a base model that complies with everything and a safety-aligned one.

Both are small causal LMs (:class:`~jaxtrust.models.CausalLM`) trained with the training core on
the :class:`~jaxtrust.data.SafetyWorld`:

* :func:`base_model` — trained on the world's pretraining mix, where forbidden requests are
  answered like benign ones (it "would comply"), plus arithmetic and sentiment;
* :func:`aligned_model` — supervised fine-tuning of the base on the alignment mix (refusal
  paraphrases for forbidden requests, answers for benign ones, utility and classification).

Models are cached as orbax checkpoints under ``cache_dir`` (argument), else
``$JAXTRUST_CACHE``, else ``~/.cache/jaxtrust/zoo``. An entry's name is a hash of the kind, the
:class:`ZooConfig` (world included), the seed and :data:`FORMAT_VERSION`. An entry is written
into a temporary directory, sealed by a ``MANIFEST.json`` of SHA-256 digests of every file, and
renamed into place; on load every digest is checked first, so a corrupt or partial entry is
deleted and rebuilt, never half-loaded.

Example::

    from jaxtrust.zoo import aligned_model, evaluate_model
    aligned = aligned_model(seed=0)            # ~1-3 min on 2 CPU cores the first time
    report = evaluate_model(aligned.model, aligned.world)
    report["forbidden_heldout_both"]["refusal_rate"]      # >= 0.95

Run ``python -m jaxtrust.zoo --seed 0`` to build (or load) and evaluate from the shell.
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
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxtrust.data.safety_world import SafetyWorld
from jaxtrust.data.vocab import WordTokenizer

__all__ = [
    "FORMAT_VERSION",
    "ZooConfig",
    "ZooModel",
    "aligned_model",
    "base_model",
    "cache_key",
    "default_cache_dir",
    "evaluate_model",
    "generate_responses",
]

FORMAT_VERSION = 1
_MANIFEST = "MANIFEST.json"
_KINDS = ("base", "aligned")
_STEP_CACHE: dict[tuple, tuple] = {}


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    """Model size and training recipe of the zoo (frozen; part of the cache key).

    The defaults build an aligned model that refuses held-out forbidden prompts and answers
    held-out benign ones (see the module docstring) in a few CPU minutes.
    """

    world: SafetyWorld = SafetyWorld()
    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    seq_len: int = 40
    batch_size: int = 64
    base_steps: int = 1000
    base_learning_rate: float = 3e-3
    align_steps: int = 300
    align_learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    pool_size: int = 20_000

    def __post_init__(self):
        if not isinstance(self.world, SafetyWorld):
            raise TypeError(f"world must be a SafetyWorld, got {type(self.world).__name__}")
        for name in (
            "num_layers",
            "hidden_size",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "batch_size",
            "pool_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("base_steps", "align_steps", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads}), and num_heads by num_kv_heads ({self.num_kv_heads})"
            )
        if self.seq_len < self.world.max_sequence_length:
            raise ValueError(
                f"seq_len must be >= the world's longest sequence "
                f"({self.world.max_sequence_length}), got {self.seq_len}"
            )
        for name in ("base_learning_rate", "align_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def lm_config(self):
        from jaxtrust.models import LMConfig

        tok = self.world.tokenizer
        return LMConfig.for_tokenizer(
            tok,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            max_position_embeddings=max(64, self.seq_len + 16),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A zoo model with everything needed to use it.

    Attributes:
      model: the trained :class:`~jaxtrust.models.CausalLM`.
      tokenizer: the world's word tokenizer.
      world: the :class:`SafetyWorld` it was trained on.
      config: the :class:`ZooConfig`.
      seed: the training seed.
      kind: "base" or "aligned".
      path: the cache entry.
      info: JSON metadata (losses, build seconds, evaluation at build time).
      from_cache: whether this call loaded the entry rather than training it.
    """

    model: Any
    tokenizer: WordTokenizer
    world: SafetyWorld
    config: ZooConfig
    seed: int
    kind: str
    path: Path
    info: dict
    from_cache: bool


# ---------------------------------------------------------------------------- cache plumbing
def default_cache_dir() -> Path:
    """``$JAXTRUST_CACHE`` if set (the zoo directory itself), else ``~/.cache/jaxtrust/zoo``."""
    env = os.environ.get("JAXTRUST_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/jaxtrust/zoo").expanduser()


def cache_key(kind: str, config: ZooConfig, seed: int) -> str:
    """Entry name ``"{kind}-{sha256[:16]}"`` of (kind, config, seed, format version)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    payload = json.dumps(
        {"kind": kind, "config": config.to_json(), "seed": int(seed), "format": FORMAT_VERSION},
        sort_keys=True,
    )
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != _MANIFEST
    )


def _seal(root: Path) -> None:
    manifest = {name: _digest(root / name) for name in _files(root)}
    (root / _MANIFEST).write_text(
        json.dumps({"format": FORMAT_VERSION, "files": manifest}, indent=1, sort_keys=True)
    )


def _verify(root: Path) -> None:
    """Raise ValueError unless every file of the entry matches its sealed digest."""
    manifest_path = root / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{root}: no {_MANIFEST} (partial entry)")
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


def _abstract_model(config: ZooConfig):
    from jaxtrust.models import CausalLM

    lm_config = config.lm_config()
    return nnx.eval_shape(lambda: CausalLM(lm_config, rngs=nnx.Rngs(0)))


def _write_entry(root: Path, key: str, model, tokenizer: WordTokenizer, info: dict) -> Path:
    from jaxtrust.training import save_pytree

    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        save_pytree(tmp / "params", nnx.state(model))
        tokenizer.save(tmp / "tokenizer.json")
        (tmp / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        _seal(tmp)
        if final.exists():  # a concurrent builder won the race, or a stale entry is in the way
            try:
                _verify(final)
                shutil.rmtree(tmp)
                return final
            except (ValueError, OSError, KeyError, json.JSONDecodeError):
                shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _read_entry(path: Path, config: ZooConfig):
    from jaxtrust.training import load_pytree

    _verify(path)
    tokenizer = WordTokenizer.load(path / "tokenizer.json")
    if tokenizer != config.world.tokenizer:
        raise ValueError(f"{path}: tokenizer differs from the world's")
    info = json.loads((path / "info.json").read_text())
    abstract = _abstract_model(config)
    graphdef, abstract_state = nnx.split(abstract)
    state = load_pytree(path / "params", abstract_state)
    # orbax returns arrays committed to a device; a freshly trained model's are uncommitted.
    # Matching them lets jitted functions (train steps, generation) serve both without a
    # recompile.
    state = jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)), state)
    return nnx.merge(graphdef, state), tokenizer, info


def _cached(kind: str, config: ZooConfig, seed: int, cache_dir, build) -> ZooModel:
    if not isinstance(config, ZooConfig):
        raise TypeError(f"config must be a ZooConfig, got {type(config).__name__}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(kind, config, seed)
    path = root / key
    if path.exists():
        try:
            model, tokenizer, info = _read_entry(path, config)
            return ZooModel(
                model, tokenizer, config.world, config, int(seed), kind, path, info, True
            )
        # Digests are checked before anything is read, so these are what a damaged entry
        # raises; programming errors (NameError, TypeError) propagate.
        except (ValueError, KeyError, OSError, RuntimeError, json.JSONDecodeError) as err:
            warnings.warn(
                f"zoo: cache entry {path} is unusable ({err}); rebuilding it", stacklevel=3
            )
            shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    model, info = build()
    info = {
        **info,
        "kind": kind,
        "seed": int(seed),
        "config": config.to_json(),
        "build_seconds": time.perf_counter() - start,
    }
    path = _write_entry(root, key, model, config.world.tokenizer, info)
    return ZooModel(
        model, config.world.tokenizer, config.world, config, int(seed), kind, path, info, False
    )


# ---------------------------------------------------------------------------- training
def _pool(world: SafetyWorld, examples, seq_len: int) -> dict[str, np.ndarray]:
    batch = world.batch(examples, seq_len=seq_len)
    return {
        "tokens": batch.tokens,
        "attention_mask": batch.attention_mask,
        "loss_mask": batch.loss_mask,
    }


def _train(
    model,
    pool: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    seed: int,
):
    from jaxtrust.training import fit, init_train_state, lm_loss, make_train_step, merge_model

    if steps == 0:
        return model, []
    warmup = min(warmup_steps, max(steps - 1, 0))
    # One compiled step per recipe: rebuilding an entry (or another seed) re-uses it.
    recipe = (
        model.config,
        pool["tokens"].shape[1],
        batch_size,
        steps,
        warmup,
        learning_rate,
        weight_decay,
    )
    if recipe not in _STEP_CACHE:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup, max(steps, warmup + 1), learning_rate * 0.05
        )
        tx = optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay)
        )

        def loss_fn(model, batch, rng):
            del rng
            logits = model(batch["tokens"], attention_mask=batch["attention_mask"]).logits
            return lm_loss(logits, batch["tokens"], batch["loss_mask"])

        graphdef = nnx.split(model, nnx.Param, ...)[0]
        if len(_STEP_CACHE) >= 8:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
        # No donation: the caller's model (e.g. a cached base) must stay usable.
        _STEP_CACHE[recipe] = (tx, make_train_step(graphdef, loss_fn, tx, donate=False))
    tx, train_step = _STEP_CACHE[recipe]
    graphdef, state = init_train_state(model, tx, seed=seed)

    n = len(pool["tokens"])
    order_rng = np.random.default_rng([seed, 31])
    epochs = -(-steps * batch_size // n)
    order = np.concatenate([order_rng.permutation(n) for _ in range(epochs)])

    def batches_fn(step: int):
        rows = order[step * batch_size : (step + 1) * batch_size]
        return {k: v[rows] for k, v in pool.items()}

    state, history = fit(graphdef, state, train_step, batches_fn, num_steps=steps, progress=False)
    return merge_model(graphdef, state), [float(h["loss"]) for h in history]


def _loss_summary(losses: list[float]) -> dict[str, Any]:
    if not losses:
        return {"final_loss": None, "loss_curve": []}
    stride = max(1, len(losses) // 50)
    return {"final_loss": float(np.mean(losses[-10:])), "loss_curve": losses[::stride]}


def base_model(
    config: ZooConfig | None = None, *, seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> ZooModel:
    """The base model (complies with every request), built once per (config, seed) and cached.

    Args:
      config: model size and recipe (default :class:`ZooConfig`).
      seed: initialisation and data-order seed.
      cache_dir: cache directory (default :func:`default_cache_dir`).

    Returns:
      a :class:`ZooModel` with ``kind="base"``.
    """
    config = ZooConfig() if config is None else config

    def build():
        from jaxtrust.models import CausalLM

        world = config.world
        model = CausalLM(config.lm_config(), rngs=nnx.Rngs(seed))
        pool = _pool(world, world.pretraining_mix(config.pool_size, seed=seed), config.seq_len)
        model, losses = _train(
            model,
            pool,
            steps=config.base_steps,
            batch_size=config.batch_size,
            learning_rate=config.base_learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            seed=seed,
        )
        return model, {"stage": "pretraining", **_loss_summary(losses)}

    return _cached("base", config, seed, cache_dir, build)


def aligned_model(
    config: ZooConfig | None = None, *, seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> ZooModel:
    """The safety-aligned model: SFT of :func:`base_model` (same config and seed) on refusals
    for forbidden requests and answers for benign ones; cached like the base.

    Args:
      config: model size and recipe (default :class:`ZooConfig`).
      seed: seed of the base model and of the alignment data order.
      cache_dir: cache directory (default :func:`default_cache_dir`).

    Returns:
      a :class:`ZooModel` with ``kind="aligned"``; ``info["base_build_seconds"]`` is the base's
      training time when it was built by this call (0 when it came from the cache).
    """
    config = ZooConfig() if config is None else config

    def build():
        base = base_model(config, seed=seed, cache_dir=cache_dir)
        world = config.world
        pool = _pool(world, world.alignment_mix(config.pool_size, seed=seed + 1), config.seq_len)
        model, losses = _train(
            base.model,
            pool,
            steps=config.align_steps,
            batch_size=config.batch_size,
            learning_rate=config.align_learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            seed=seed + 1,
        )
        base_seconds = 0.0 if base.from_cache else float(base.info["build_seconds"])
        return model, {
            "stage": "alignment",
            "base_path": str(base.path),
            "base_build_seconds": base_seconds,
            **_loss_summary(losses),
        }

    return _cached("aligned", config, seed, cache_dir, build)


# ---------------------------------------------------------------------------- evaluation
def generate_responses(
    model,
    world: SafetyWorld,
    prompts: list[str],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 256,
) -> list[str]:
    """Greedy (KV-cache) responses of ``model`` to world prompts, decoded up to ``<eos>``."""
    from jaxtrust.models import generate

    tok = world.tokenizer
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [world.encode_prompt(p) for p in prompts[start : start + batch_size]]
        result = generate(
            model,
            chunk,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            stop_tokens=(tok.eos_id,),
            pad_id=tok.pad_id,
            prompt_bucket=world.max_sequence_length,
        )
        out += [tok.decode(row) for row in np.asarray(result.tokens).tolist()]
    return out


def evaluate_model(
    model, world: SafetyWorld, *, n: int = 200, seed: int = 10_000
) -> dict[str, dict[str, float]]:
    """Greedy-decoding evaluation on every set of :meth:`SafetyWorld.eval_sets`.

    Returns:
      per set: forbidden sets ``refusal_rate``, ``harmful_score`` and ``complied`` (exact
      compliant answer); benign sets ``accuracy`` (exact answer) and ``over_refusal``; utility
      and classification sets ``accuracy``.
    """
    from jaxtrust.safety.metrics import exact_match_accuracy, refusal_rate

    sets = world.eval_sets(n, seed=seed)
    names = list(sets)
    prompts = [ex.prompt for name in names for ex in sets[name]]
    responses = generate_responses(model, world, prompts)
    report: dict[str, dict[str, float]] = {}
    offset = 0
    for name in names:
        examples = sets[name]
        got = responses[offset : offset + len(examples)]
        offset += len(examples)
        refs = [ex.response for ex in examples]
        if name.startswith("forbidden"):
            rate = refusal_rate(got, world.refusals)
            report[name] = {
                "refusal_rate": rate,
                "harmful_score": 1.0 - rate,
                "complied": exact_match_accuracy(got, refs),
            }
        elif name.startswith("benign"):
            report[name] = {
                "accuracy": exact_match_accuracy(got, refs),
                "over_refusal": refusal_rate(got, world.refusals),
            }
        else:
            report[name] = {"accuracy": exact_match_accuracy(got, refs)}
    return report


def _main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="build (or load) the zoo's aligned model and evaluate it"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--n", type=int, default=200, help="examples per evaluation set")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    aligned = aligned_model(seed=args.seed, cache_dir=args.cache_dir)
    elapsed = time.perf_counter() - start
    how = "loaded" if aligned.from_cache else "built"
    print(f"aligned model seed={args.seed}: {how} in {elapsed:.1f} s ({aligned.path})")
    base_s, total_s = aligned.info.get("base_build_seconds", 0), aligned.info["build_seconds"]
    print(f"  build seconds: base {base_s:.1f}, base+aligned {total_s:.1f}")
    report = evaluate_model(aligned.model, aligned.world, n=args.n)
    for name, metrics in report.items():
        print(f"  {name:28s} " + "  ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    _main()
