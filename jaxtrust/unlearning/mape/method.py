r"""MAPE-Unlearn: update only the heads and filters the mask search selects.

Pipeline (:func:`mape_unlearn`):

1. mask Fishers on the forget set and on (a sample of) the retain set
   (:func:`~jaxtrust.unlearning.mape.fisher.mask_fisher`);
2. the budgeted selection (:func:`~jaxtrust.unlearning.mape.search.select_modules`);
3. a base unlearning objective (``ga``, ``neggrad_plus`` / gradient difference, ``npo``; any of
   :data:`jaxtrust.unlearning.baselines.METHODS`) trained through
   :func:`~jaxtrust.unlearning.transforms.masked_updates` with :func:`parameter_mask` of the
   selection, so that only the selected heads' q/k/v columns and o rows and the selected
   filters' up (gate) columns and down rows move.

The mask is an ordinary optax transformation: :func:`module_mask_transform` drops it into any
chain, e.g. a user's own fine-tuning loop::

    tx = optax.chain(optax.adam(1e-3), module_mask_transform(model, selection))

Reconstructed from MAPE-Unlearn (arXiv 2508.17233) and Kwon et al. (NeurIPS 2022); see
:mod:`~jaxtrust.unlearning.mape.search`.

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.models import ViT, ViTConfig, EncoderConfig
  >>> vit = ViT(ViTConfig(input_shape=(8,), patch=4, num_classes=3,
  ...           encoder=EncoderConfig(dim=8, num_layers=1, num_heads=2, mlp_dim=4)),
  ...           rngs=nnx.Rngs(0))
  >>> sel = random_selection(module_shape(vit), budget=0.5, seed=0)
  >>> mask = parameter_mask(vit, sel)
  >>> 0.0 < float(mask["encoder"]["layers"]["mlp"]["up_proj"]["kernel"].mean()) <= 1.0
  True
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxtrust.training.sharding import path_to_str
from jaxtrust.unlearning.baselines import METHODS, UnlearnConfig, unlearn
from jaxtrust.unlearning.mape.fisher import ModuleShape, mask_fisher, module_shape
from jaxtrust.unlearning.mape.search import (
    ModuleSelection,
    _check_budget,
    _warm_start,
    select_modules,
)
from jaxtrust.unlearning.transforms import masked_updates

__all__ = [
    "MAPEConfig",
    "MAPEResult",
    "mape_unlearn",
    "module_mask_transform",
    "parameter_mask",
    "random_selection",
]

_BASES = ("ga", "neggrad_plus", "npo", "random_labels", "finetune", "l1_sparse")


def _leaf_mask(name: str, shape: tuple[int, ...], s: ModuleShape, heads, filters) -> np.ndarray:
    parts = name.split("/")
    tail = "/".join(parts[-3:])
    L = s.num_layers
    if len(shape) == 0 or shape[0] != L or "layers" not in parts:
        return np.zeros(shape, np.float32)
    q_cols = np.repeat(heads, s.head_dim, axis=1).astype(np.float32)  # [L, H*hd]
    group = s.num_heads // s.num_kv_heads
    kv_sel = heads.reshape(L, s.num_kv_heads, group).any(axis=2)
    kv_cols = np.repeat(kv_sel, s.head_dim, axis=1).astype(np.float32)  # [L, KV*hd]
    f = filters.astype(np.float32)  # [L, F]
    table = {
        "attn/q_proj/kernel": lambda: q_cols[:, None, :],
        "attn/q_proj/bias": lambda: q_cols,
        "attn/k_proj/kernel": lambda: kv_cols[:, None, :],
        "attn/k_proj/bias": lambda: kv_cols,
        "attn/v_proj/kernel": lambda: kv_cols[:, None, :],
        "attn/v_proj/bias": lambda: kv_cols,
        "attn/o_proj/kernel": lambda: q_cols[:, :, None],
        "mlp/up_proj/kernel": lambda: f[:, None, :],
        "mlp/up_proj/bias": lambda: f,
        "mlp/gate_proj/kernel": lambda: f[:, None, :],
        "mlp/gate_proj/bias": lambda: f,
        "mlp/down_proj/kernel": lambda: f[:, :, None],
    }
    if tail not in table:  # norms, shared biases (o_proj, down_proj), q/k norms
        return np.zeros(shape, np.float32)
    return np.broadcast_to(table[tail](), shape).astype(np.float32)


def parameter_mask(model: nnx.Module, selection: ModuleSelection) -> Any:
    """0/1 mask over ``model``'s parameters selecting the weights of the chosen modules.

    A selected head owns its q columns and o rows (and its k/v columns; with grouped-query
    attention a k/v group is selected when any of its heads is); a selected filter owns its
    up (and gate) column, that column's bias and its down row. Everything else (embeddings,
    norms, the classifier head, the o/down biases shared by all modules) is 0.

    Args:
      model: a model :func:`~jaxtrust.unlearning.mape.fisher.module_shape` knows.
      selection: a :class:`~jaxtrust.unlearning.mape.search.ModuleSelection` of its shape.

    Returns:
      An ``nnx.State`` of float32 0/1 arrays with the parameters' structure.
    """
    s = module_shape(model)
    heads, filters = np.asarray(selection.heads, bool), np.asarray(selection.filters, bool)
    if heads.shape != (s.num_layers, s.num_heads) or filters.shape != (s.num_layers, s.mlp_dim):
        raise ValueError(
            f"selection has heads {heads.shape} and filters {filters.shape}; the model needs "
            f"{(s.num_layers, s.num_heads)} and {(s.num_layers, s.mlp_dim)}"
        )
    params = nnx.state(model, nnx.Param)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(
            _leaf_mask(path_to_str(path), tuple(x.shape), s, heads, filters)
        ),
        params,
    )


def module_mask_transform(
    model: nnx.Module, selection: ModuleSelection
) -> optax.GradientTransformationExtraArgs:
    """:func:`~jaxtrust.unlearning.transforms.masked_updates` of :func:`parameter_mask`: put
    it last in any optax chain to update only the selected heads and filters."""
    return masked_updates(parameter_mask(model, selection))


def random_selection(shape: ModuleShape, *, budget: float, seed: int) -> ModuleSelection:
    """Random modules at the same budget (the module-aware ablation's control): random scores
    through the same knapsack warm start, no refinement."""
    rng = np.random.default_rng(seed)
    head = rng.uniform(size=(shape.num_layers, shape.num_heads))
    ffn = rng.uniform(size=(shape.num_layers, shape.mlp_dim))
    _check_budget(budget)
    heads, filters, total = _warm_start(head, ffn, budget, shape.head_cost, shape.filter_cost)
    cost = heads.sum() * shape.head_cost + filters.sum() * shape.filter_cost
    return ModuleSelection(heads, filters, 0.0, 0.0, 0, float(cost / total))


@dataclasses.dataclass(frozen=True)
class MAPEConfig:
    """Hyper-parameters of :func:`mape_unlearn`.

    Attributes:
      budget: fraction of the head+filter parameters updated, in (0, 1].
      lam: weight of the retain Fisher in the selection objective (>= 0).
      greedy: refine the ranking warm start with greedy intra-layer swaps.
      base: the base objective (``ga``, ``neggrad_plus``, ``npo``, ...).
      unlearn: the base objective's :class:`~jaxtrust.unlearning.baselines.UnlearnConfig`.
      selection: ``"fisher"`` (MAPE) or ``"random"`` (ablation: random modules).
      retain_samples: retain rows used for the retain Fisher (a random subset; ``0`` = all).
      fisher_batch: rows per compiled Fisher chunk.
    """

    budget: float = 0.3
    lam: float = 1.0
    greedy: bool = True
    base: str = "neggrad_plus"
    unlearn: UnlearnConfig = UnlearnConfig()
    selection: str = "fisher"
    retain_samples: int = 1000
    fisher_batch: int = 128

    def __post_init__(self):
        if isinstance(self.budget, bool) or not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget must be a fraction in (0, 1], got {self.budget!r}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.base not in _BASES:
            raise ValueError(f"base must be one of {_BASES}, got {self.base!r}")
        if self.selection not in ("fisher", "random"):
            raise ValueError(f"selection must be 'fisher' or 'random', got {self.selection!r}")
        if self.retain_samples < 0 or self.fisher_batch < 1:
            raise ValueError("retain_samples must be >= 0 and fisher_batch >= 1")
        assert self.base in METHODS


class MAPEResult(NamedTuple):
    """Attributes:
    model: the unlearned model. selection: the chosen modules. mask_fraction: fraction of
    all parameters updated. seconds: wall time of the whole method. search_seconds: Fisher +
    selection. history: the base objective's training records."""

    model: nnx.Module
    selection: ModuleSelection
    mask_fraction: float
    seconds: float
    search_seconds: float
    history: list


def mape_unlearn(
    model: nnx.Module,
    forget: Mapping[str, Any],
    retain: Mapping[str, Any],
    config: MAPEConfig,
    *,
    seed: int,
) -> MAPEResult:
    """Select heads and filters by their mask Fisher, then unlearn updating only them.

    Args:
      model: the trained model (not modified).
      forget, retain: ``{"x", "y"}`` arrays.
      config: a :class:`MAPEConfig`.
      seed: seeds the retain subsample, a random selection and the base objective.

    Returns:
      A :class:`MAPEResult`.
    """
    if not isinstance(config, MAPEConfig):
        raise TypeError(f"config must be a MAPEConfig, got {type(config).__name__}")
    start = time.perf_counter()
    shape = module_shape(model)
    if config.selection == "random":
        selection = random_selection(shape, budget=config.budget, seed=seed)
    else:
        ry = np.asarray(retain["y"])
        if len(ry) == 0 or len(np.asarray(forget["y"])) == 0:
            raise ValueError("forget and retain sets must be non-empty")
        rows = np.arange(len(ry))
        if config.retain_samples and config.retain_samples < len(ry):
            rows = np.random.default_rng(seed).choice(len(ry), config.retain_samples, replace=False)
        sub = {"x": np.asarray(retain["x"])[rows], "y": ry[rows]}
        f_forget = mask_fisher(model, forget, batch_size=config.fisher_batch)
        f_retain = mask_fisher(model, sub, batch_size=config.fisher_batch)
        selection = select_modules(
            f_forget, f_retain, shape, budget=config.budget, lam=config.lam, greedy=config.greedy
        )
    mask = parameter_mask(model, selection)
    search_seconds = time.perf_counter() - start
    leaves = jax.tree.leaves(mask)
    fraction = float(sum(float(m.sum()) for m in leaves) / sum(m.size for m in leaves))
    out = unlearn(config.base, model, forget, retain, config.unlearn, seed=seed, mask=mask)
    return MAPEResult(
        out.model, selection, fraction, time.perf_counter() - start, search_seconds, out.history
    )
