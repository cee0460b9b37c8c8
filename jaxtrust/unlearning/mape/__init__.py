"""MAPE-Unlearn (reconstructed): Fisher-based selection of heads and filters, then a base
unlearning objective that updates only them.

* :mod:`~jaxtrust.unlearning.mape.fisher` — Fisher of the head/filter mask variables.
* :mod:`~jaxtrust.unlearning.mape.search` — budgeted ranking warm start + greedy swaps.
* :mod:`~jaxtrust.unlearning.mape.method` — the parameter mask, its optax transform, the method.
* :mod:`~jaxtrust.unlearning.mape.reproduce` — ``jaxtrust reproduce mape``.
"""

from jaxtrust.unlearning.mape.fisher import (
    MaskFisher,
    MaskGradients,
    ModuleShape,
    fisher_from_gradients,
    mask_fisher,
    mask_gradients,
    module_shape,
)
from jaxtrust.unlearning.mape.method import (
    MAPEConfig,
    MAPEResult,
    mape_unlearn,
    module_mask_transform,
    parameter_mask,
    random_selection,
)
from jaxtrust.unlearning.mape.search import (
    ModuleSelection,
    block_objective,
    select_modules,
    select_modules_from_scores,
)

__all__ = [
    "MAPEConfig",
    "MAPEResult",
    "MaskFisher",
    "MaskGradients",
    "ModuleSelection",
    "ModuleShape",
    "block_objective",
    "fisher_from_gradients",
    "mape_unlearn",
    "mask_fisher",
    "mask_gradients",
    "module_mask_transform",
    "module_shape",
    "parameter_mask",
    "random_selection",
    "select_modules",
    "select_modules_from_scores",
]
