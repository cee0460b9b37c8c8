# ruff: noqa: F722
r"""The image-classification unlearning metrics of SalUn / Unlearn-Sparse, in percent.

* **UA** (unlearning accuracy) :math:`= 100 - \mathrm{acc}(D_f)`;
* **RA** (retain accuracy) :math:`= \mathrm{acc}(D_r)`;
* **TA** (test accuracy) :math:`= \mathrm{acc}(D_{test})`;
* **MIA** (MIA-efficacy): % of :math:`D_f` an SVC on the true-class confidence, fitted on
  retain (member) vs test (non-member) rows of the *unlearned* model, calls non-member
  (:func:`jaxtrust.privacy.mia.svc_mia_from_logits`);
* **avg_gap** :math:`= \frac14 \sum_{m \in \{UA, RA, TA, MIA\}} |m - m_{\mathrm{Retrain}}|`,
  the distance to the exact-unlearning reference (Fan et al., *SalUn*, ICLR 2024).

Example:
  >>> a = UnlearnMetrics(UA=10.0, RA=99.0, TA=85.0, MIA=20.0)
  >>> avg_gap(a, UnlearnMetrics(UA=12.0, RA=100.0, TA=86.0, MIA=16.0))
  2.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxtrust.privacy.mia.scores import predict_logits
from jaxtrust.privacy.mia.svc import svc_mia_from_logits

__all__ = ["METRIC_NAMES", "UnlearnMetrics", "accuracy", "avg_gap", "unlearning_metrics"]

METRIC_NAMES = ("UA", "RA", "TA", "MIA")


class UnlearnMetrics(NamedTuple):
    """UA, RA, TA and MIA-efficacy in percent (see the module docstring)."""

    UA: float
    RA: float
    TA: float
    MIA: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items()}


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def avg_gap(metrics: UnlearnMetrics, reference: UnlearnMetrics) -> float:
    """Mean absolute difference to ``reference`` (Retrain) over UA, RA, TA and MIA."""
    return float(np.mean([abs(getattr(metrics, k) - getattr(reference, k)) for k in METRIC_NAMES]))


def unlearning_metrics(
    model: nnx.Module,
    forget: Mapping[str, np.ndarray],
    retain: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    apply: Callable[[nnx.Module, jax.Array], jax.Array] | None = None,
) -> UnlearnMetrics:
    """UA, RA, TA and MIA-efficacy of ``model`` on ``{"x", "y"}`` forget / retain / test sets.

    Args:
      model: the (unlearned) classifier.
      forget, retain, test: ``{"x", "y"}`` arrays (``test`` is the validation split when
        tuning).
      seed: host seed of the SVC's retain subset.
      apply: ``apply(model, x) -> logits`` (default ``model(x)``).

    Returns:
      An :class:`UnlearnMetrics`.
    """
    for name, part in (("forget", forget), ("retain", retain), ("test", test)):
        if not isinstance(part, Mapping) or "x" not in part or "y" not in part:
            raise TypeError(f"{name} must be a mapping with 'x' and 'y' arrays")
    lf = predict_logits(model, forget["x"], apply=apply)
    lr = predict_logits(model, retain["x"], apply=apply)
    lt = predict_logits(model, test["x"], apply=apply)
    mia = svc_mia_from_logits(lr, retain["y"], lt, test["y"], lf, forget["y"], seed=seed)
    return UnlearnMetrics(
        UA=100.0 - accuracy(lf, forget["y"]),
        RA=accuracy(lr, retain["y"]),
        TA=accuracy(lt, test["y"]),
        MIA=mia.efficacy,
    )
