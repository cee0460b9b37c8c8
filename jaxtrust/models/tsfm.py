"""A TimesFM-style patched decoder-only time-series foundation model (Flax NNX).

Architecture (Das, Kong, Sen, Zhou, "A decoder-only foundation model for time-series
forecasting", ICML 2024 -- TimesFM 1.0)::

    context x [b, T] (T = N * p), observed mask m [b, T]
      -> instance normalisation with the mean / std of the first observed patch (causal: no
         patch sees statistics of a later one)
      -> patches [b, N, p]; input features [normalised values * m, 1 - m]   [b, N, 2p]
      -> residual-MLP patch embedding                                      [b, N, d]
      -> causal transformer over patches (the core CausalLM stack, fed embeddings; a patch
         with no observed point is masked out of attention)
      -> RMSNorm, residual-MLP output block                  [b, N, H * (1 + Q)]
      -> per patch i: point and Q quantile forecasts of x[(i+1)p : (i+1)p + H], de-normalised

Autoregressive decoding (:func:`forecast`) appends the H point forecasts (H a multiple of p) to
the context, keeps the last ``context_len`` points and runs the model again.

The transformer is :class:`jaxtrust.models.CausalLM` with a one-row vocabulary: its embedding
row and one-unit logits are unused (zero gradient), only its stacked blocks (RMSNorm, RoPE
attention, SwiGLU) serve.

Parameter paths::

    input_block/{hidden,output,residual}/{kernel,bias}   [2p, f], [f, d], [2p, d]
    backbone/layers/...                                  the CausalLM blocks (stacked)
    final_norm/scale                                     [d]
    output_block/{hidden,output,residual}/{kernel,bias}  [d, f], [f, H(1+Q)], [d, H(1+Q)]
"""

# ruff: noqa: F722
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxtrust.models.config import LMConfig
from jaxtrust.models.layers import Linear, Norm
from jaxtrust.models.transformer import CausalLM
from jaxtrust.training.memo import memoize

__all__ = [
    "TSFM",
    "ForecastOutput",
    "TSFMConfig",
    "TSFMOutput",
    "forecast",
    "instance_stats",
    "pad_context",
    "patch_targets",
    "tsfm_loss",
]

# TimesFM's floor below which a patch's standard deviation counts as zero (then scale 1).
STD_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class TSFMConfig:
    """Shape of a :class:`TSFM`.

    Attributes:
      patch_len: input patch length p.
      output_patch_len: forecast length H per patch (a multiple of p, for decoding).
      context_len: the longest context (a multiple of p); decoding keeps this many points.
      model_dim: transformer width d.
      num_layers / num_heads: transformer depth and heads (head_dim = d / heads).
      ffn_dim: SwiGLU width of the transformer blocks.
      mlp_dim: hidden width of the residual input and output blocks.
      quantiles: quantile levels of the quantile heads.
    """

    patch_len: int = 16
    output_patch_len: int = 32
    context_len: int = 128
    model_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 128
    mlp_dim: int = 128
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)

    def __post_init__(self):
        for name in (
            "patch_len",
            "output_patch_len",
            "context_len",
            "model_dim",
            "num_layers",
            "num_heads",
            "ffn_dim",
            "mlp_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.output_patch_len % self.patch_len:
            raise ValueError(
                f"output_patch_len ({self.output_patch_len}) must be a multiple of patch_len "
                f"({self.patch_len}) so that decoding can append whole patches"
            )
        if self.context_len % self.patch_len:
            raise ValueError(
                f"context_len ({self.context_len}) must be a multiple of patch_len "
                f"({self.patch_len})"
            )
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"model_dim ({self.model_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not all(0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {self.quantiles}")

    @property
    def num_patches(self) -> int:
        return self.context_len // self.patch_len

    def lm_config(self) -> LMConfig:
        """The config of the transformer stack (a :class:`CausalLM` with a one-row vocab)."""
        return LMConfig(
            arch="llama",
            vocab_size=1,
            hidden_size=self.model_dim,
            intermediate_size=self.ffn_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_heads,
            head_dim=self.model_dim // self.num_heads,
            max_position_embeddings=max(64, 4 * self.num_patches),
            tie_word_embeddings=True,
            model_type="llama",
        )

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "quantiles": list(self.quantiles)}

    @classmethod
    def tiny(cls, **overrides: Any) -> TSFMConfig:
        """A 2-layer, 32-wide model with a 64-point context, for tests and examples."""
        base: dict[str, Any] = dict(
            patch_len=8,
            output_patch_len=16,
            context_len=64,
            model_dim=32,
            num_layers=2,
            num_heads=2,
            ffn_dim=64,
            mlp_dim=64,
        )
        return cls(**{**base, **overrides})


class TSFMOutput(NamedTuple):
    """Per-patch forecasts of the next ``output_patch_len`` points, in the data's units.

    Attributes:
      mean: ``[batch, patches, horizon]`` point forecasts.
      quantiles: ``[batch, patches, horizon, quantiles]``.
      loc / scale: ``[batch]`` the instance-normalisation statistics.
    """

    mean: Float[Array, "batch patches horizon"]
    quantiles: Float[Array, "batch patches horizon quantiles"]
    loc: Float[Array, " batch"]
    scale: Float[Array, " batch"]


class ForecastOutput(NamedTuple):
    """Decoded forecasts: ``mean [batch, horizon]``, ``quantiles [batch, horizon, quantiles]``."""

    mean: Float[Array, "batch horizon"]
    quantiles: Float[Array, "batch horizon quantiles"]


class ResidualBlock(nnx.Module):
    r"""TimesFM's residual MLP: :math:`W_2\,\mathrm{swish}(W_1 x + b_1) + b_2 + W_r x + b_r`."""

    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
        self.hidden = Linear(din, hidden, bias=True, rngs=rngs, std=1.0 / np.sqrt(din))
        self.output = Linear(hidden, dout, bias=True, rngs=rngs, std=1.0 / np.sqrt(hidden))
        self.residual = Linear(din, dout, bias=True, rngs=rngs, std=1.0 / np.sqrt(din))

    def __call__(self, x: Float[Array, "... din"]) -> Float[Array, "... dout"]:
        return self.output(jax.nn.silu(self.hidden(x))) + self.residual(x)


def _check_series(x: Any, mask: Any, patch_len: int, where: str) -> None:
    if not hasattr(x, "ndim") or x.ndim != 2:
        raise ValueError(f"{where}: x must be a [batch, time] array, got {getattr(x, 'shape', x)}")
    if x.shape[1] < patch_len:
        raise ValueError(
            f"{where}: the context ({x.shape[1]} points) is shorter than one patch ({patch_len})"
        )
    if x.shape[1] % patch_len:
        raise ValueError(
            f"{where}: time ({x.shape[1]}) must be a multiple of patch_len ({patch_len}); "
            "left-pad with pad_context"
        )
    if mask is not None and tuple(mask.shape) != tuple(x.shape):
        raise ValueError(f"{where}: mask must have shape {tuple(x.shape)}, got {mask.shape}")
    if not isinstance(x, jax.core.Tracer):
        values = np.asarray(x)
        observed = np.ones(values.shape, bool) if mask is None else np.asarray(mask, bool)
        if not np.isfinite(values[observed]).all():
            raise ValueError(
                f"{where}: x contains NaN or Inf at observed points; fill them and set "
                "mask=False there"
            )


def instance_stats(
    x: Float[ArrayLike, "batch time"], mask: Bool[ArrayLike, "batch time"], patch_len: int
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    r"""Mean and standard deviation of each series' first patch with an observed point.

    :math:`\mu = \sum_t m_t x_t / \sum_t m_t`, :math:`\sigma = \sqrt{\sum_t m_t (x_t-\mu)^2 /
    \sum_t m_t}` over that patch; :math:`\sigma < 10^{-6}` is replaced by 1 (TimesFM).

    Args:
      x: ``[batch, time]`` values, time a multiple of ``patch_len``.
      mask: ``[batch, time]`` True where observed.
      patch_len: p.

    Returns:
      ``(loc, scale)``, each ``[batch]``.
    """
    x = jnp.asarray(x, jnp.float32)
    m = jnp.asarray(mask).astype(jnp.float32)
    b, t = x.shape
    xp = x.reshape(b, t // patch_len, patch_len)
    mp = m.reshape(b, t // patch_len, patch_len)
    first = jnp.argmax(jnp.any(mp > 0, axis=-1), axis=1)
    xs = jnp.take_along_axis(xp, first[:, None, None], axis=1)[:, 0]
    ms = jnp.take_along_axis(mp, first[:, None, None], axis=1)[:, 0]
    count = jnp.maximum(jnp.sum(ms, axis=-1), 1.0)
    loc = jnp.sum(xs * ms, axis=-1) / count
    var = jnp.sum(ms * (xs - loc[:, None]) ** 2, axis=-1) / count
    std = jnp.sqrt(var)
    return loc, jnp.where(std < STD_TOLERANCE, 1.0, std)


def pad_context(
    x: Float[ArrayLike, "batch time"], length: int
) -> tuple[Float[Array, "batch length"], Bool[Array, "batch length"]]:
    """Left-pad (with zeros, mask False) or left-truncate ``x`` to ``length`` points.

    Returns:
      ``(x, mask)`` of shape ``[batch, length]``.

    Example:
      >>> x, m = pad_context(jnp.ones((1, 5)), 8)
      >>> m.tolist()
      [[False, False, False, True, True, True, True, True]]
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be a [batch, time] array, got shape {x.shape}")
    t = x.shape[1]
    if t >= length:
        return x[:, t - length :], jnp.ones((x.shape[0], length), bool)
    pad = length - t
    return (
        jnp.pad(x, ((0, 0), (pad, 0))),
        jnp.concatenate([jnp.zeros((x.shape[0], pad), bool), jnp.ones(x.shape, bool)], axis=1),
    )


class TSFM(nnx.Module):
    """The patched decoder (see the module docstring).

    Example:
      >>> model = TSFM(TSFMConfig.tiny(), rngs=nnx.Rngs(0))
      >>> out = model(jnp.ones((2, 64)))
      >>> out.mean.shape, out.quantiles.shape
      ((2, 8, 16), (2, 8, 16, 3))

    Reference: Das, Kong, Sen, Zhou, "A decoder-only foundation model for time-series
    forecasting", ICML 2024.
    """

    def __init__(self, config: TSFMConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, TSFMConfig):
            raise TypeError(f"config must be a TSFMConfig, got {type(config).__name__}")
        self.config = config
        c = config
        out_dim = c.output_patch_len * (1 + len(c.quantiles))
        self.input_block = ResidualBlock(2 * c.patch_len, c.mlp_dim, c.model_dim, rngs=rngs)
        self.backbone = CausalLM(c.lm_config(), rngs=rngs)
        self.final_norm = Norm(c.model_dim, layer_norm=False)
        self.output_block = ResidualBlock(c.model_dim, c.mlp_dim, out_dim, rngs=rngs)

    def __call__(
        self, x: Float[ArrayLike, "batch time"], mask: Bool[ArrayLike, "batch time"] | None = None
    ) -> TSFMOutput:
        """Forecasts after every patch.

        Args:
          x: ``[batch, time]`` values, time = N * patch_len (left-pad with :func:`pad_context`).
          mask: ``[batch, time]`` True where observed (default all True).

        Returns:
          :class:`TSFMOutput`; ``mean[:, i]`` forecasts ``x[(i+1)p : (i+1)p + H]``.

        Raises:
          ValueError: not 2-D, shorter than a patch, not a multiple of the patch, a mask of
            another shape, or NaN/Inf at observed points.
        """
        c = self.config
        _check_series(x, mask, c.patch_len, "TSFM")
        x = jnp.asarray(x, jnp.float32)
        b, t = x.shape
        n, p = t // c.patch_len, c.patch_len
        m = jnp.ones((b, t), bool) if mask is None else jnp.asarray(mask).astype(bool)
        loc, scale = instance_stats(x, m, p)
        mf = m.astype(jnp.float32)
        xn = jnp.where(m, (x - loc[:, None]) / scale[:, None], 0.0)
        features = jnp.concatenate(
            [xn.reshape(b, n, p), 1.0 - mf.reshape(b, n, p)], axis=-1
        )  # [b, n, 2p]
        emb = self.input_block(features)
        observed = jnp.any(m.reshape(b, n, p), axis=-1)
        hidden = self.backbone(
            inputs_embeds=emb, attention_mask=observed, output_hidden_states=True
        ).hidden_states[-1]
        rms = jax.lax.rsqrt(jnp.mean(hidden**2, axis=-1, keepdims=True) + 1e-6)
        h = hidden * rms * self.final_norm.scale[...][None, None, :]
        y = self.output_block(h).reshape(b, n, c.output_patch_len, 1 + len(c.quantiles))
        y = y * scale[:, None, None, None] + loc[:, None, None, None]
        return TSFMOutput(y[..., 0], y[..., 1:], loc, scale)


def patch_targets(
    window: Float[ArrayLike, "batch length"], config: TSFMConfig
) -> tuple[Float[Array, "batch time"], Float[Array, "batch patches horizon"]]:
    """Split windows of ``context + H`` points into the input and every patch's target.

    Target of patch i: ``window[(i+1)p : (i+1)p + H]``.

    Returns:
      ``(context [batch, T], targets [batch, T / p, H])`` with ``T = length - H``.
    """
    window = jnp.asarray(window, jnp.float32)
    h, p = config.output_patch_len, config.patch_len
    t = window.shape[1] - h
    if t < p or t % p:
        raise ValueError(
            f"window length {window.shape[1]} must be output_patch_len ({h}) plus a positive "
            f"multiple of patch_len ({p})"
        )
    n = t // p
    idx = (jnp.arange(n)[:, None] + 1) * p + jnp.arange(h)[None, :]  # [n, H]
    return window[:, :t], window[:, idx]


def tsfm_loss(
    model: TSFM,
    window: Float[ArrayLike, "batch length"],
    mask: Bool[ArrayLike, "batch time"] | None = None,
    *,
    last_patch_only: bool = False,
) -> Float[Array, ""]:
    r"""TimesFM's training loss: normalised MSE plus the quantile (pinball) losses.

    .. math:: \mathcal{L} = \frac{1}{|V| H}\sum_{(b,i) \in V}\sum_{j}
       \Big(\frac{\hat y_{bij} - y_{bij}}{s_b}\Big)^2
       + \sum_q \rho_q\Big(\frac{y_{bij} - \hat y^{(q)}_{bij}}{s_b}\Big),
       \quad \rho_q(u) = \max(q u, (q-1) u),

    over the patches V with an observed point (or only the last patch); :math:`s_b` is the
    standard deviation of row b's observed context.

    Args:
      model: the forecaster.
      window: ``[batch, T + H]`` contexts followed by the horizon.
      mask: ``[batch, T]`` observed mask of the context part (default all True).
      last_patch_only: score only the forecast after the last patch (the forecast a user sees).

    Returns:
      Scalar float32 loss.
    """
    c = model.config
    context, targets = patch_targets(window, c)
    out = model(context, mask)
    b, n, _ = targets.shape
    m = jnp.ones(context.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    valid = jnp.any(m.reshape(b, n, c.patch_len), axis=-1).astype(jnp.float32)
    if last_patch_only:
        valid = valid * (jnp.arange(n) == n - 1)[None, :].astype(jnp.float32)
    # Errors are scaled by the std of the whole observed context, not by the first patch's
    # (the model's normalisation): a trending series would otherwise weigh thousands of times
    # more than a flat one. This weights the loss only; the forecasts stay causal.
    mf = m.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mf, axis=1), 1.0)
    mu = jnp.sum(context * mf, axis=1) / count
    std = jnp.sqrt(jnp.sum(mf * (context - mu[:, None]) ** 2, axis=1) / count)
    s = jnp.where(std < STD_TOLERANCE, 1.0, std)[:, None, None]
    err = (out.mean - targets) / s
    u = (targets[..., None] - out.quantiles) / s[..., None]
    q = jnp.asarray(c.quantiles, jnp.float32)[None, None, None, :]
    pinball = jnp.sum(jnp.maximum(q * u, (q - 1.0) * u), axis=-1)
    per_patch = jnp.mean(err**2 + pinball, axis=-1)  # [b, n]
    return jnp.sum(per_patch * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def _build_forecast(graphdef: nnx.GraphDef, steps: int, context_len: int):
    def run(state, x, mask):
        model = nnx.merge(graphdef, state)
        means, quants = [], []
        for _ in range(steps):
            out = model(x, mask)
            mean, quant = out.mean[:, -1], out.quantiles[:, -1]
            means.append(mean)
            quants.append(quant)
            x = jnp.concatenate([x, mean], axis=1)[:, -context_len:]
            mask = jnp.concatenate([mask, jnp.ones(mean.shape, bool)], axis=1)[:, -context_len:]
        return jnp.concatenate(means, axis=1), jnp.concatenate(quants, axis=1)

    return jax.jit(run)


def forecast(
    model: TSFM,
    context: Float[ArrayLike, "batch time"],
    horizon: int,
    *,
    mask: Bool[ArrayLike, "batch time"] | None = None,
) -> ForecastOutput:
    """Forecast ``horizon`` points by autoregressive multi-patch decoding.

    The context is left-padded or left-truncated to ``config.context_len``; each step forecasts
    ``H = output_patch_len`` points from the last patch, appends the point forecasts to the
    context (dropping as many of its oldest points) and repeats ``ceil(horizon / H)`` times.

    Args:
      model: the forecaster.
      context: ``[batch, time]`` history (time >= patch_len; any length).
      horizon: number of points to forecast (>= 1).
      mask: ``[batch, time]`` True where observed (default all True).

    Returns:
      :class:`ForecastOutput` with ``[batch, horizon]`` means and quantiles.

    Example:
      >>> model = TSFM(TSFMConfig.tiny(), rngs=nnx.Rngs(0))
      >>> forecast(model, jnp.ones((3, 40)), 20).mean.shape
      (3, 20)
    """
    c = model.config
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    context = jnp.asarray(context, jnp.float32)
    if context.ndim != 2:
        raise ValueError(f"context must be a [batch, time] array, got shape {context.shape}")
    if context.shape[1] < c.patch_len:
        raise ValueError(
            f"context has {context.shape[1]} points, shorter than one patch ({c.patch_len})"
        )
    if mask is not None and tuple(jnp.shape(mask)) != tuple(context.shape):
        raise ValueError(f"mask must have shape {tuple(context.shape)}, got {jnp.shape(mask)}")
    observed = np.ones(context.shape, bool) if mask is None else np.asarray(mask, bool)
    if not np.isfinite(np.asarray(context)[observed]).all():
        raise ValueError("context contains NaN or Inf at observed points; fill them, mask=False")
    x, m = pad_context(context, c.context_len)
    if mask is not None:
        m = m & (pad_context(jnp.asarray(observed, jnp.float32), c.context_len)[0] > 0.5)
    steps = -(-int(horizon) // c.output_patch_len)
    graphdef, state = nnx.split(model)
    run = memoize(
        "tsfm.forecast",
        (graphdef, steps, c.context_len),
        lambda: _build_forecast(graphdef, steps, c.context_len),
    )
    mean, quant = run(state, x, m)
    return ForecastOutput(mean[:, :horizon], quant[:, :horizon])
