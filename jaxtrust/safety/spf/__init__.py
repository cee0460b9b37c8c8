"""SPF: safety-preserving fine-tuning as an optax transform.

* :func:`spf` — the transform: removes the components of the fine-tuning update that conflict
  with a low-rank safety subspace estimated (per matrix) from the gradient of one safety example.
* :mod:`~jaxtrust.safety.spf.subspace` — bases (factored one-sample, SVD, randomized) and the
  projections (conflict, PCGrad, null, block).
* :mod:`~jaxtrust.safety.spf.geometry` — the paper's three insights as measurements (spectra,
  gradient cosines, subspace overlaps).
* :mod:`~jaxtrust.safety.spf.baselines` — the random-subspace control, full-gradient PCGrad and
  Safe LoRA's post-hoc projection.
* ``reproduce`` — ``jaxtrust reproduce spf`` (imported by the registry, not here).

Example::

    import optax
    from jaxtrust.safety.spf import spf
    tx = optax.chain(spf(rank=4), optax.adamw(1e-4))
    # tx.update(grads, opt_state, params, safety_grads=grads_of_one_refusal)
"""

from jaxtrust.safety.spf.baselines import pcgrad_full, random_subspace, safe_lora_project
from jaxtrust.safety.spf.geometry import (
    basis_overlap_table,
    effective_rank,
    gradient_cosine,
    matrices,
    random_subspace_overlap,
    spectrum_table,
    subspace_overlap,
    top_singular_vectors,
)
from jaxtrust.safety.spf.subspace import (
    SubspaceBasis,
    basis_from_factors,
    basis_gram,
    basis_randomized,
    basis_svd,
    choose_basis_method,
    compute_basis,
    explained_ratio_curve,
    project,
    project_block,
    project_conflict,
    project_null,
    project_pcgrad,
    rank_for_ratio,
    subspace_coefficients,
)
from jaxtrust.safety.spf.transform import SPFState, path_name, selected_matrices, spf

__all__ = [
    "SPFState",
    "SubspaceBasis",
    "basis_from_factors",
    "basis_gram",
    "basis_overlap_table",
    "basis_randomized",
    "basis_svd",
    "choose_basis_method",
    "compute_basis",
    "effective_rank",
    "explained_ratio_curve",
    "gradient_cosine",
    "matrices",
    "path_name",
    "pcgrad_full",
    "project",
    "project_block",
    "project_conflict",
    "project_null",
    "project_pcgrad",
    "random_subspace",
    "random_subspace_overlap",
    "rank_for_ratio",
    "safe_lora_project",
    "selected_matrices",
    "spectrum_table",
    "spf",
    "subspace_coefficients",
    "subspace_overlap",
    "top_singular_vectors",
]
