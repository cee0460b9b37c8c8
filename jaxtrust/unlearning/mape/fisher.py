# ruff: noqa: F722
r"""Fisher information of the structural mask variables (heads and FFN filters).

Every Transformer of jaxtrust takes ``head_mask [layers, heads]`` (multiplying each head's
attention output) and ``ffn_mask [layers, ffn]`` (multiplying each FFN hidden unit). At the
trained model both masks are all ones. With per-sample gradients
:math:`g_i = \partial \ell_i / \partial m \,|_{m=1}` the empirical Fisher of the mask
variables on a data set :math:`D` is

.. math:: F_D = \frac{1}{|D|} \sum_{i \in D} g_i g_i^\top,

of which :func:`mask_fisher` keeps the diagonal (:math:`F_{jj}`, one number per head and per
filter) and the intra-layer blocks (``[layers, heads, heads]`` and ``[layers, ffn, ffn]``).
Zeroing a set :math:`S` of modules (:math:`\delta = -\mathbb 1_S`) changes the loss by
:math:`\Delta\mathcal L \approx \frac12 \mathbb 1_S^\top F \mathbb 1_S` to second order
(first-order term dropped at a converged model), which is what the mask search of
:mod:`~jaxtrust.unlearning.mape.search` ranks and refines.

Reference: Kwon, Kim, Mahoney, Hassoun, Keutzer, Gholami, *A Fast Post-Training Pruning
Framework for Transformers*, NeurIPS 2022 (Fisher of head/filter masks); Michel et al., *Are
Sixteen Heads Really Better than One?*, NeurIPS 2019 (head gates).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.models import ViT, ViTConfig, EncoderConfig
  >>> vit = ViT(ViTConfig(input_shape=(8,), patch=4, num_classes=3,
  ...           encoder=EncoderConfig(dim=8, num_layers=1, num_heads=2, mlp_dim=4)),
  ...           rngs=nnx.Rngs(0))
  >>> f = mask_fisher(vit, {"x": np.ones((5, 8), np.float32), "y": np.zeros(5, np.int32)})
  >>> f.head.shape, f.ffn.shape, f.ffn_block.shape
  ((1, 2), (1, 4), (1, 4, 4))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.models.config import LMConfig
from jaxtrust.models.encoder import EncoderConfig, TextClassifier, TransformerEncoder
from jaxtrust.models.transformer import CausalLM
from jaxtrust.models.vit import ViT
from jaxtrust.training.memo import memoize

__all__ = [
    "MaskFisher",
    "MaskGradients",
    "ModuleShape",
    "fisher_from_gradients",
    "mask_fisher",
    "mask_gradients",
    "module_shape",
]


@dataclasses.dataclass(frozen=True)
class ModuleShape:
    """The maskable modules of a Transformer.

    Attributes:
      num_layers, num_heads, num_kv_heads, head_dim, mlp_dim, dim: sizes.
      gated: the FFN has a gate projection (Llama family).
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    dim: int
    gated: bool = False

    @property
    def head_cost(self) -> int:
        """Parameters of one head: its q (and k/v) columns and o rows (biases included)."""
        kv = self.num_kv_heads / self.num_heads
        return int(round(self.dim * self.head_dim * (2 + 2 * kv) + self.head_dim * (1 + 2 * kv)))

    @property
    def filter_cost(self) -> int:
        """Parameters of one FFN filter: its up (and gate) column + bias and down row."""
        return (3 if self.gated else 2) * self.dim + (2 if self.gated else 1)


def module_shape(model: nnx.Module) -> ModuleShape:
    """The :class:`ModuleShape` of a ViT, text classifier, encoder or causal LM.

    Raises:
      TypeError: an unsupported model.
    """
    if isinstance(model, ViT):
        c: Any = model.config.encoder
    elif isinstance(model, TextClassifier):
        c = model.encoder.config
    elif isinstance(model, TransformerEncoder):
        c = model.config
    elif isinstance(model, CausalLM):
        lm: LMConfig = model.config
        return ModuleShape(
            lm.num_layers,
            lm.num_heads,
            lm.num_kv_heads,
            lm.head_dim,
            lm.intermediate_size,
            lm.hidden_size,
            gated=lm.arch == "llama",
        )
    else:
        raise TypeError(
            "model must be a ViT, TextClassifier, TransformerEncoder or CausalLM, got "
            f"{type(model).__name__}"
        )
    assert isinstance(c, EncoderConfig)
    return ModuleShape(c.num_layers, c.num_heads, c.num_heads, c.head_dim, c.mlp_dim, c.dim)


class MaskGradients(NamedTuple):
    """Per-sample gradients of the loss w.r.t. the masks at 1: ``head [n, L, H]``,
    ``ffn [n, L, F]``."""

    head: np.ndarray
    ffn: np.ndarray


class MaskFisher(NamedTuple):
    """Empirical Fisher of the mask variables on one data set.

    Attributes:
      head, ffn: diagonals ``[L, H]``, ``[L, F]``.
      head_block, ffn_block: intra-layer blocks ``[L, H, H]``, ``[L, F, F]``.
      head_grad, ffn_grad: mean gradients (the first-order term), ``[L, H]``, ``[L, F]``.
      n: number of samples.
    """

    head: np.ndarray
    ffn: np.ndarray
    head_block: np.ndarray
    ffn_block: np.ndarray
    head_grad: np.ndarray
    ffn_grad: np.ndarray
    n: int


def _default_loss(model, x, y, head_mask, ffn_mask):
    logits = model(x[None], head_mask=head_mask, ffn_mask=ffn_mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y[None])[0]


def mask_gradients(
    model: nnx.Module,
    data: Mapping[str, Any],
    *,
    batch_size: int = 128,
    loss: Callable | None = None,
) -> MaskGradients:
    """Per-sample :math:`\\partial \\ell_i / \\partial m` at ``head_mask = ffn_mask = 1``.

    Args:
      model: a model :func:`module_shape` knows, called as ``model(x, head_mask=, ffn_mask=)``.
      data: ``{"x", "y"}`` rows.
      batch_size: rows per compiled chunk (the last is padded).
      loss: ``loss(model, x_row, y_row, head_mask, ffn_mask) -> scalar`` for one row (default:
        cross-entropy of a classifier on ``x_row[None]``).

    Returns:
      :class:`MaskGradients` as float64 NumPy arrays.
    """
    shape = module_shape(model)
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    n = len(y)
    if n == 0 or len(x) != n:
        raise ValueError(f"data must hold matching non-empty x and y, got {len(x)} and {n} rows")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    graphdef, state = nnx.split(model)
    fn_loss = _default_loss if loss is None else loss

    def build():
        def one(st, xi, yi):
            m = nnx.merge(graphdef, st)
            hm = jnp.ones((shape.num_layers, shape.num_heads), jnp.float32)
            fm = jnp.ones((shape.num_layers, shape.mlp_dim), jnp.float32)
            return jax.grad(lambda h, f: fn_loss(m, xi, yi, h, f), argnums=(0, 1))(hm, fm)

        return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))

    fn = memoize("unlearning.mape.mask_grads", (graphdef, loss), build)
    size = batch_size  # fixed chunk shape: one compile whatever the set size
    heads, ffns = [], []
    for s in range(0, n, size):
        xb, yb = x[s : s + size], y[s : s + size]
        k = len(yb)
        if k < size:
            xb = np.concatenate([xb, np.repeat(xb[-1:], size - k, axis=0)])
            yb = np.concatenate([yb, np.repeat(yb[-1:], size - k, axis=0)])
        gh, gf = fn(state, jnp.asarray(xb), jnp.asarray(yb))
        heads.append(np.asarray(gh, np.float64)[:k])
        ffns.append(np.asarray(gf, np.float64)[:k])
    return MaskGradients(np.concatenate(heads), np.concatenate(ffns))


def fisher_from_gradients(grads: MaskGradients) -> MaskFisher:
    """Diagonal, intra-layer blocks and mean of per-sample mask gradients."""
    gh, gf = np.asarray(grads.head), np.asarray(grads.ffn)
    n = gh.shape[0]
    return MaskFisher(
        head=np.mean(gh**2, axis=0),
        ffn=np.mean(gf**2, axis=0),
        head_block=np.einsum("nlh,nlk->lhk", gh, gh) / n,
        ffn_block=np.einsum("nlh,nlk->lhk", gf, gf) / n,
        head_grad=gh.mean(axis=0),
        ffn_grad=gf.mean(axis=0),
        n=int(n),
    )


def mask_fisher(
    model: nnx.Module,
    data: Mapping[str, Any],
    *,
    batch_size: int = 128,
    loss: Callable | None = None,
) -> MaskFisher:
    """Empirical Fisher of the head and filter masks of ``model`` on ``data``.

    Args:
      model, data, batch_size, loss: as in :func:`mask_gradients`.

    Returns:
      A :class:`MaskFisher`.
    """
    return fisher_from_gradients(mask_gradients(model, data, batch_size=batch_size, loss=loss))
