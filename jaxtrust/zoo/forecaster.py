"""The in-house time-series foundation model: a :class:`~jaxtrust.models.tsfm.TSFM` pretrained on
real series that ship in packages plus generated series, cached and checksummed.

Corpus: the first ``1 - holdout_fraction`` of every real series in ``real_series`` (the tails
are kept for evaluation) and ``synthetic_count`` generated series of each kind in
:data:`jaxtrust.data.timeseries.SYNTHETIC_KINDS`. A training example is a window of
``context_len + output_patch_len`` points drawn from one series (real with probability
``real_weight``); TimesFM's random left padding masks a random number of leading patches, so the
model learns short contexts too.

:func:`evaluate_forecaster` scores the model on each real series' held-out tail against
seasonal-naive (MASE, and the weighted quantile loss with seasonal-naive quantiles from its
in-sample residuals).

Example::

    entry = pretrained_forecaster(PretrainConfig.tiny(), seed=0)
    print(evaluate_forecaster(entry.model, entry.config)["mase"])
"""

# ruff: noqa: F722
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtrust.data.timeseries import (
    SYNTHETIC_KINDS,
    load_series,
    real_series_available,
    seasonal_period,
    synthetic_series,
)
from jaxtrust.models.tsfm import TSFM, TSFMConfig, forecast, tsfm_loss
from jaxtrust.training.checkpoint import load_pytree, save_pytree
from jaxtrust.training.loop import fit
from jaxtrust.training.recipes import adamw_cosine
from jaxtrust.training.step import init_train_state, make_train_step, merge_model
from jaxtrust.zoo import cache as _cache

__all__ = [
    "PRETRAIN_SERIES",
    "Forecaster",
    "PretrainConfig",
    "evaluate_forecaster",
    "pretrain_batches",
    "pretrained_forecaster",
    "seasonal_naive",
]

# The series the valuation experiment values (seattle_temps) stays out of pretraining.
PRETRAIN_SERIES = (
    "co2",
    "sunspots",
    "elnino",
    "nile",
    "elec_equip",
    "realgdp",
    "cpi",
    "unemp",
    "sf_temps",
    "us_employment",
)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pretraining recipe of the in-house forecaster.

    Attributes:
      model: the architecture.
      steps / batch_size / learning_rate / warmup_steps: AdamW on a warmup-cosine schedule.
      real_series: names of real series in the corpus (those not installed are skipped).
      holdout_fraction: the tail of each real series kept out of the corpus for evaluation.
      synthetic_count / synthetic_length: generated series per kind and their length.
      real_weight: probability that a training window comes from a real series.
    """

    model: TSFMConfig = TSFMConfig()
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    real_series: tuple[str, ...] = PRETRAIN_SERIES
    holdout_fraction: float = 0.2
    synthetic_count: int = 100
    synthetic_length: int = 512
    real_weight: float = 0.5

    def __post_init__(self):
        if not isinstance(self.model, TSFMConfig):
            raise TypeError(f"model must be a TSFMConfig, got {type(self.model).__name__}")
        for name in ("steps", "batch_size", "synthetic_count", "synthetic_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("holdout_fraction", "real_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_json()
        d["real_series"] = list(self.real_series)
        return d

    @classmethod
    def tiny(cls, **overrides: Any) -> PretrainConfig:
        """The tiny preset: TSFMConfig.tiny, 300 steps (well under a minute on 2 cores)."""
        base: dict[str, Any] = dict(
            model=TSFMConfig.tiny(), steps=300, batch_size=32, synthetic_count=20
        )
        return cls(**{**base, **overrides})


class Forecaster(NamedTuple):
    """A pretrained forecaster: the model, its recipe, the cache entry's info and path."""

    model: TSFM
    config: PretrainConfig
    info: dict
    path: Path
    from_cache: bool


def _corpus(config: PretrainConfig, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    real = []
    for name in config.real_series:
        if real_series_available(name):
            x = load_series(name)
            real.append(x[: int(round(len(x) * (1 - config.holdout_fraction)))])
    synth = [
        synthetic_series(kind, config.synthetic_length, seed=seed * 100_003 + 7919 * k + i)
        for k, kind in enumerate(SYNTHETIC_KINDS)
        for i in range(config.synthetic_count)
    ]
    return real, synth


def pretrain_batches(
    real: list[np.ndarray], synth: list[np.ndarray], config: PretrainConfig, step: int, seed: int
) -> dict[str, np.ndarray]:
    """The batch of step ``step``: ``{"window": [B, T + H], "mask": [B, T]}`` (deterministic).

    Each row picks a series (real with probability ``real_weight``), a window of up to
    ``T + H`` points ending anywhere, right-aligned and left-padded (mask False), then masks a
    random number of further leading patches (at least one patch stays observed).
    """
    c = config.model
    t, h, p = c.context_len, c.output_patch_len, c.patch_len
    rng = np.random.default_rng([seed, step])
    windows = np.zeros((config.batch_size, t + h), np.float32)
    masks = np.zeros((config.batch_size, t), bool)
    for row in range(config.batch_size):
        pool = real if (real and rng.random() < config.real_weight) else synth
        x = pool[rng.integers(len(pool))]
        length = min(len(x), t + h)
        start = rng.integers(0, len(x) - length + 1)
        seg = x[start : start + length]
        windows[row, t + h - length :] = seg
        observed = length - h
        keep = rng.integers(1, max(1, observed // p) + 1) * p if rng.random() < 0.3 else observed
        keep = min(keep, observed)
        masks[row, t - keep :] = True
    return {"window": windows, "mask": masks}


def _loss_fn(model, batch, rng):
    loss = tsfm_loss(model, batch["window"], batch["mask"])
    return loss, {}


def _train(config: PretrainConfig, seed: int) -> tuple[TSFM, dict]:
    real, synth = _corpus(config, seed)
    model = TSFM(config.model, rngs=nnx.Rngs(seed))
    tx = adamw_cosine(config.learning_rate, config.steps, warmup_steps=config.warmup_steps)
    graphdef, state = init_train_state(model, tx, seed=seed)
    step = make_train_step(graphdef, _loss_fn, tx)
    start = time.perf_counter()
    state, history = fit(
        graphdef,
        state,
        step,
        lambda i: pretrain_batches(real, synth, config, i, seed),
        num_steps=config.steps,
        progress=False,
    )
    losses = [h["loss"] for h in history]
    tail = max(1, len(losses) // 10)
    info = {
        "train_seconds": time.perf_counter() - start,
        "real_series_used": len(real),
        "synthetic_series": len(synth),
        "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])),
        "losses_every_10": [float(v) for v in losses[::10]],
        "parameters": int(sum(v.size for v in jax.tree.leaves(state.params))),
    }
    return merge_model(graphdef, state), info


def _write(model: TSFM, folder: Path) -> None:
    save_pytree(folder / "params", nnx.state(model))


def _reader(config: PretrainConfig):
    def read(path: Path) -> TSFM:
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: TSFM(config.model, rngs=nnx.Rngs(0))))
        state = load_pytree(path / "params", abstract)
        # orbax returns committed arrays; matching a freshly trained model's uncommitted ones
        # lets the same jitted programs serve both.
        state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)
        return nnx.merge(graphdef, state)

    return read


def pretrained_forecaster(
    config: PretrainConfig, seed: int = 0, *, cache_dir: str | Path | None = None
) -> Forecaster:
    """Build (pretrain) or load the forecaster for ``(config, seed)``.

    Args:
      config: the recipe (:meth:`PretrainConfig.tiny` for tests).
      seed: model initialisation and data order.
      cache_dir: the cache root (default: the zoo's).

    Returns:
      :class:`Forecaster`.
    """
    if not isinstance(config, PretrainConfig):
        raise TypeError(f"config must be a PretrainConfig, got {type(config).__name__}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    key = _cache.cache_key("tsfm", {"config": config.to_json(), "seed": int(seed)})

    def build():
        model, info = _train(config, int(seed))
        return model, {**info, "config": config.to_json(), "seed": int(seed)}

    entry = _cache.cached_entry(cache_dir, key, build, _write, _reader(config))
    return Forecaster(entry.value, config, entry.info, entry.path, entry.from_cache)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """``y_{T+h} = y_{T+h-m\\lceil h/m \\rceil}``: repeat the last season (``period`` m)."""
    m = max(1, min(period, len(history)))
    last = history[-m:]
    return np.array([last[i % m] for i in range(horizon)])


def _origins(n: int, split: int, context: int, horizon: int) -> list[int]:
    return [s for s in range(max(split, 16), n - horizon + 1, horizon)]


def _forecast_chunks(model: TSFM, ctx: np.ndarray, mask: np.ndarray, horizon: int, chunk=64):
    # Fixed-size chunks (the last one padded) so that every series reuses one compiled program.
    means, quants = [], []
    for i in range(0, len(ctx), chunk):
        c, m = ctx[i : i + chunk], mask[i : i + chunk]
        pad = chunk - len(c)
        c = np.concatenate([c, np.repeat(c[-1:], pad, axis=0)])
        m = np.concatenate([m, np.repeat(m[-1:], pad, axis=0)])
        out = forecast(model, jnp.asarray(c, jnp.float32), horizon, mask=jnp.asarray(m))
        means.append(np.asarray(out.mean)[: chunk - pad])
        quants.append(np.asarray(out.quantiles)[: chunk - pad])
    return np.concatenate(means), np.concatenate(quants)


def _wql(truth: np.ndarray, qpred: np.ndarray, qs: np.ndarray) -> float:
    u = truth[..., None] - qpred
    loss = np.maximum(qs * u, (qs - 1) * u)
    return float(2 * loss.sum() / (len(qs) * np.abs(truth).sum()))


def evaluate_forecaster(
    model: TSFM,
    config: PretrainConfig,
    names: tuple[str, ...] | None = None,
    *,
    horizon: int | None = None,
) -> dict[str, dict[str, float]]:
    r"""MASE and weighted quantile loss on each real series' held-out tail, vs seasonal-naive.

    Rolling origins every ``horizon`` points through the tail (the last ``holdout_fraction``);
    each forecast sees the ``context_len`` points before its origin.

    * MASE: :math:`\frac{1}{H}\sum_h |y - \hat y| / \frac{1}{n-m}\sum_t |y_t - y_{t-m}|` with the
      in-sample (pre-tail) seasonal difference of period m, averaged over origins.
    * WQL: :math:`2\sum_{q,t}\rho_q(y_t - \hat y^{(q)}_t) / (|Q| \sum_t |y_t|)`; seasonal-naive's
      quantiles are its point forecast plus the empirical quantiles of its in-sample errors.

    Args:
      model: the forecaster.
      config: its recipe (quantile levels, hold-out fraction).
      names: series to score (default: every installed one of ``config.real_series`` plus
        ``seattle_temps``).
      horizon: forecast length (default ``output_patch_len``).

    Returns:
      ``{"mase", "seasonal_naive_mase", "wql", "seasonal_naive_wql", "origins"}``, each
      ``{series: value}``.
    """
    c = config.model
    horizon = horizon or c.output_patch_len
    names = names or tuple(n for n in (*config.real_series, "seattle_temps"))
    qs = np.asarray(c.quantiles)
    out: dict[str, dict[str, float]] = {
        k: {} for k in ("mase", "seasonal_naive_mase", "wql", "seasonal_naive_wql", "origins")
    }
    for name in names:
        if not real_series_available(name):
            continue
        x = load_series(name)
        n = len(x)
        split = int(round(n * (1 - config.holdout_fraction)))
        m = seasonal_period(name)
        m = m if split > 2 * m else 1
        scale = np.mean(np.abs(x[m:split] - x[:-m][: split - m]))
        scale = scale if scale > 0 else 1.0
        resid = x[m:split] - x[:-m][: split - m]
        origins = _origins(n, split, c.context_len, horizon)
        if not origins:
            continue
        ctx = np.stack(
            [
                np.pad(x[max(0, o - c.context_len) : o], (max(0, c.context_len - o), 0))
                for o in origins
            ]
        )
        mask = np.stack([np.arange(c.context_len) >= max(0, c.context_len - o) for o in origins])
        mean, quant = _forecast_chunks(model, ctx, mask, horizon)
        truth = np.stack([x[o : o + horizon] for o in origins])
        naive = np.stack([seasonal_naive(x[:o], horizon, m) for o in origins])
        naive_q = naive[..., None] + np.quantile(resid, qs)[None, None, :]

        out["mase"][name] = float(np.mean(np.abs(mean - truth)) / scale)
        out["seasonal_naive_mase"][name] = float(np.mean(np.abs(naive - truth)) / scale)
        out["wql"][name] = _wql(truth, quant, qs)
        out["seasonal_naive_wql"][name] = _wql(truth, naive_q, qs)
        out["origins"][name] = float(len(origins))
    return out
