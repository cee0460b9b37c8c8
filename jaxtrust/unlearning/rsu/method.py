r"""RSU's SeqUnlearn module: unlearn the forget set in risk-ordered stages with any base method.

Given per-sample risks (:mod:`~jaxtrust.unlearning.rsu.ranking`), the forget set is cut into
``num_stages`` chunks (:func:`~jaxtrust.unlearning.rsu.ranking.split_by_risk`) and the base
algorithm runs once per chunk, in order, each stage starting from the previous stage's model;
the retain set excludes every forget chunk throughout (as in RUM's meta-algorithm). Stage
``s`` uses ``stage_configs[s]`` when given (per-stage hyper-parameters) and ``unlearn``
otherwise. The base is any baseline name of :data:`jaxtrust.unlearning.baselines.METHODS` or
a callable ``base(model, forget, retain, stage, seed) -> model`` (e.g. MAPE).

Reconstructed from the RSU abstract (Chen et al., *Machine Unlearning in Forgettability
Sequence*, arXiv 2410.06446, withdrawn; no code or tables) and RUM (Zhao et al., *What makes
unlearning hard and what to do about it*, NeurIPS 2024).

Example:
  >>> import numpy as np
  >>> from flax import nnx
  >>> from jaxtrust.unlearning.baselines import UnlearnConfig
  >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  >>> rng = np.random.default_rng(0)
  >>> f = {"x": rng.normal(size=(6, 4)).astype(np.float32), "y": rng.integers(0, 3, 6)}
  >>> r = {"x": rng.normal(size=(9, 4)).astype(np.float32), "y": rng.integers(0, 3, 9)}
  >>> cfg = RSUConfig(num_stages=2, unlearn=UnlearnConfig(steps=2, forget_batch=3))
  >>> out = seq_unlearn(model, f, r, np.arange(6.0), cfg, seed=0)
  >>> [s.tolist() for s in out.stages]
  [[0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from flax import nnx

from jaxtrust.unlearning.baselines import METHODS, UnlearnConfig, unlearn
from jaxtrust.unlearning.rsu.ranking import ORDERS, split_by_risk

__all__ = ["RSUConfig", "RSUResult", "seq_unlearn"]


@dataclasses.dataclass(frozen=True)
class RSUConfig:
    """Hyper-parameters of :func:`seq_unlearn`.

    Attributes:
      num_stages: chunks of the forget set (>= 1).
      order: ``low_to_high``, ``high_to_low`` or ``random``.
      base: a baseline name (default NegGrad+).
      unlearn: the base's :class:`~jaxtrust.unlearning.baselines.UnlearnConfig` per stage.
      stage_configs: optional per-stage configs (length ``num_stages``), overriding ``unlearn``.
    """

    num_stages: int = 3
    order: str = "low_to_high"
    base: str = "neggrad_plus"
    unlearn: UnlearnConfig = UnlearnConfig()
    stage_configs: tuple[UnlearnConfig, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"num_stages must be a positive int, got {self.num_stages!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.base not in METHODS:
            raise ValueError(f"base must be one of {METHODS}, got {self.base!r}")
        if self.stage_configs is not None and len(self.stage_configs) != self.num_stages:
            raise ValueError(
                f"stage_configs has {len(self.stage_configs)} entries for {self.num_stages} stages"
            )


class RSUResult(NamedTuple):
    """Attributes: model (unlearned), stages (positions into the forget set, in order),
    seconds (total), stage_seconds (per stage)."""

    model: nnx.Module
    stages: list[np.ndarray]
    seconds: float
    stage_seconds: list[float]


def seq_unlearn(
    model: nnx.Module,
    forget: Mapping[str, Any],
    retain: Mapping[str, Any],
    risk: np.ndarray,
    config: RSUConfig,
    *,
    seed: int,
    base: Callable[..., nnx.Module] | None = None,
) -> RSUResult:
    """Unlearn ``forget`` in ``config.num_stages`` risk-ordered stages.

    Args:
      model: the trained model (not modified).
      forget, retain: ``{"x", "y"}`` arrays.
      risk: per-sample risk of the forget rows (larger = more exposed).
      config: an :class:`RSUConfig`.
      seed: seeds the random order and the base method.
      base: optional ``base(model, forget_chunk, retain, stage, seed) -> model`` replacing
        ``config.base``.

    Returns:
      An :class:`RSUResult`.
    """
    if not isinstance(config, RSUConfig):
        raise TypeError(f"config must be an RSUConfig, got {type(config).__name__}")
    n = len(np.asarray(forget["y"]))
    if np.shape(risk) != (n,):
        raise ValueError(f"risk must have one score per forget row ({n}), got {np.shape(risk)}")
    start = time.perf_counter()
    stages = split_by_risk(risk, config.num_stages, config.order, seed=seed)
    current, times = model, []
    for s, positions in enumerate(stages):
        t0 = time.perf_counter()
        chunk = {k: np.asarray(v)[positions] for k, v in forget.items()}
        if base is not None:
            current = base(current, chunk, retain, s, seed)
        else:
            cfg = config.unlearn if config.stage_configs is None else config.stage_configs[s]
            current = unlearn(config.base, current, chunk, retain, cfg, seed=seed + s).model
        times.append(time.perf_counter() - t0)
    return RSUResult(current, stages, time.perf_counter() - start, times)
