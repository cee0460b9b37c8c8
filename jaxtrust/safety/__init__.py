"""Safety: safety-preserving fine-tuning (SPF), one-shot safety recovery and the
activation-approximation safety audit. The SPF transform, its subspace and geometry tools, and
safety metrics are here; the other methods land with their issues."""

from jaxtrust.safety import actapprox
from jaxtrust.safety._geometry import (
    basis_overlap_table,
    effective_rank,
    gradient_cosine,
    matrices,
    random_subspace_overlap,
    spectrum_table,
    subspace_overlap,
    top_singular_vectors,
)
from jaxtrust.safety._spf import SPFState, path_name, selected_matrices, spf
from jaxtrust.safety._subspace import (
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

__all__ = [
    "SPFState",
    "SubspaceBasis",
    "actapprox",
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
    "project",
    "project_block",
    "project_conflict",
    "project_null",
    "project_pcgrad",
    "random_subspace_overlap",
    "rank_for_ratio",
    "selected_matrices",
    "spectrum_table",
    "spf",
    "subspace_coefficients",
    "subspace_overlap",
    "top_singular_vectors",
]
