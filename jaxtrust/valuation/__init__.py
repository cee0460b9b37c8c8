"""Data valuation: which training windows help a model, and which hurt.

Every valuer takes an :class:`~jaxtrust.valuation.objectives.Objective` (a weighted loss of a
parameter pytree) or window features, and returns one value per window, positive when the
window helps (lowers the held-out loss):

* :mod:`jaxtrust.valuation.ltsv` -- LTSV, one-step in-context fine-tuning + block aggregation;
* :mod:`jaxtrust.valuation.influence` -- TracIn, influence functions (CG, LiSSA);
* :mod:`jaxtrust.valuation.loo` -- exact fine-tuning leave-one-out, removal curves;
* :mod:`jaxtrust.valuation.agnostic` -- KNN-Shapley, Data-OOB, random.
"""

from jaxtrust.valuation.agnostic import (
    data_oob_scores,
    knn_shapley_scores,
    random_scores,
    window_features,
)
from jaxtrust.valuation.influence import (
    InverseHVP,
    influence_scores,
    inverse_hvp,
    per_window_grad_dots,
    tracin_scores,
)
from jaxtrust.valuation.loo import RemovalCurve, finetuned_losses, loo_scores, removal_curve
from jaxtrust.valuation.objectives import Objective, check_windows, tsfm_objective

__all__ = [
    "InverseHVP",
    "Objective",
    "RemovalCurve",
    "check_windows",
    "data_oob_scores",
    "finetuned_losses",
    "influence_scores",
    "inverse_hvp",
    "knn_shapley_scores",
    "loo_scores",
    "per_window_grad_dots",
    "random_scores",
    "removal_curve",
    "tracin_scores",
    "tsfm_objective",
    "window_features",
]
