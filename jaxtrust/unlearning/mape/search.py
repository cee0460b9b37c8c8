r"""MAPE's budgeted module selection: a ranking warm start refined by greedy intra-layer swaps.

Which heads and filters should an unlearning update touch? Those whose perturbation moves the
forget loss a lot and the retain loss little. With the mask Fishers :math:`F_f` (forget) and
:math:`F_r` (retain) of :mod:`~jaxtrust.unlearning.mape.fisher`, each normalised by its trace
(so the two data sets weigh the same whatever their loss scales), the second-order objective of
a selection :math:`S` is

.. math:: J(S) = \mathbb 1_S^\top \big(\tilde F_f - \lambda \tilde F_r\big) \mathbb 1_S,
   \qquad \tilde F = F / \operatorname{tr} F,

maximised under a parameter budget :math:`\sum_{j \in S} c_j \le b \cdot P` (a head costs its
q/k/v columns and o rows, a filter its up column and down row; :math:`P` is the cost of every
head and filter, :math:`b \in (0, 1]`).

1. **Warm start (ranking)**, with the diagonal of :math:`\tilde F_f - \lambda\tilde F_r`: heads
   and filters are each sorted by score; for every number of heads the rest of the budget is
   filled with the best filters, and the split with the largest total score is kept (the
   knapsack-style search of Kwon et al.).
2. **Greedy refinement** with the intra-layer blocks: in every layer, keeping the warm start's
   numbers of heads and of filters, the best single swap (one selected module out, one
   unselected in) is applied while it increases :math:`J`; the gain of swapping ``i`` out and
   ``j`` in is :math:`-2(M\mathbb 1_S)_i + 2(M\mathbb 1_S)_j + M_{ii} + M_{jj} - 2M_{ij}`.

This reconstructs MAPE-Unlearn (arXiv 2508.17233; "a learnable pair of masks", "greedy search
with a warm start", second-order Taylor with a diagonal Fisher) from Kwon et al.'s
mask search and rearrangement (NeurIPS 2022); the paper's own code was not available.

Example:
  >>> import numpy as np
  >>> f = np.zeros((1, 4)); f[0, 2] = 1.0
  >>> sel = select_modules_from_scores(
  ...     head=f, ffn=np.zeros((1, 2)), head_block=None, ffn_block=None, budget=0.25,
  ...     head_cost=1, filter_cost=1)
  >>> np.flatnonzero(sel.heads[0]).tolist()
  [2]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxtrust.unlearning.mape.fisher import MaskFisher, ModuleShape

__all__ = ["ModuleSelection", "block_objective", "select_modules", "select_modules_from_scores"]


@dataclasses.dataclass(frozen=True)
class ModuleSelection:
    """The heads and filters an unlearning update may touch.

    Attributes:
      heads: ``[L, H]`` bool.
      filters: ``[L, F]`` bool.
      warm_objective: :math:`J` of the warm start (block objective).
      objective: :math:`J` after refinement (equal to ``warm_objective`` without it).
      swaps: number of greedy swaps applied.
      fraction: selected cost over the cost of every head and filter.
    """

    heads: np.ndarray
    filters: np.ndarray
    warm_objective: float
    objective: float
    swaps: int
    fraction: float

    @property
    def num_heads(self) -> int:
        return int(self.heads.sum())

    @property
    def num_filters(self) -> int:
        return int(self.filters.sum())


def _check_budget(budget: float) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction in (0, 1], got {budget!r}")


def _warm_start(head, ffn, budget, head_cost, filter_cost):
    L, H = head.shape
    F = ffn.shape[1]
    total = L * H * head_cost + L * F * filter_cost
    cap = budget * total
    h_order = np.argsort(-head.ravel(), kind="stable")
    f_order = np.argsort(-ffn.ravel(), kind="stable")
    h_cum = np.concatenate([[0.0], np.cumsum(head.ravel()[h_order])])
    f_cum = np.concatenate([[0.0], np.cumsum(ffn.ravel()[f_order])])
    best = None
    for nh in range(L * H + 1):
        rest = cap - nh * head_cost
        if rest < -1e-9:
            break
        nf = min(L * F, int(np.floor(rest / filter_cost + 1e-9)))
        value = h_cum[nh] + f_cum[nf]
        if best is None or value > best[0] + 1e-15:
            best = (value, nh, nf)
    _, nh, nf = best
    heads = np.zeros(L * H, bool)
    heads[h_order[:nh]] = True
    filters = np.zeros(L * F, bool)
    filters[f_order[:nf]] = True
    return heads.reshape(L, H), filters.reshape(L, F), total


def block_objective(selected: np.ndarray, block: np.ndarray) -> float:
    """:math:`\\sum_l \\mathbb 1_{S_l}^\\top M_l \\mathbb 1_{S_l}` for ``selected [L, k]``,
    ``block [L, k, k]``."""
    s = selected.astype(np.float64)
    return float(np.einsum("lh,lhk,lk->", s, block, s))


def _greedy_layer(sel: np.ndarray, m: np.ndarray, max_swaps: int) -> tuple[np.ndarray, int]:
    sel = sel.copy()
    k = int(sel.sum())
    if k == 0 or k == sel.size:
        return sel, 0
    v = m @ sel.astype(np.float64)
    diag = np.diag(m)
    swaps = 0
    while swaps < max_swaps:
        ins, outs = np.flatnonzero(sel), np.flatnonzero(~sel)
        gain = (
            -2.0 * v[ins][:, None]
            + 2.0 * v[outs][None, :]
            + diag[ins][:, None]
            + diag[outs][None, :]
            - 2.0 * m[np.ix_(ins, outs)]
        )
        a, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[a, b] <= 1e-12 * max(1.0, float(np.abs(m).max())):
            break
        i, j = ins[a], outs[b]
        sel[i], sel[j] = False, True
        v += m[:, j] - m[:, i]
        swaps += 1
    return sel, swaps


def select_modules_from_scores(
    *,
    head: np.ndarray,
    ffn: np.ndarray,
    head_block: np.ndarray | None,
    ffn_block: np.ndarray | None,
    budget: float,
    head_cost: int,
    filter_cost: int,
    greedy: bool = True,
    max_swaps: int | None = None,
) -> ModuleSelection:
    """The search on given scores: diagonal ``head [L, H]`` / ``ffn [L, F]`` and intra-layer
    blocks (their diagonals must be the scores; ``None`` skips refinement of that kind).

    Args:
      head, ffn: diagonal scores.
      head_block, ffn_block: ``[L, H, H]`` / ``[L, F, F]`` symmetric score blocks.
      budget: fraction of the total head+filter cost, in (0, 1].
      head_cost, filter_cost: parameters per head / per filter (> 0).
      greedy: refine the warm start with the blocks.
      max_swaps: cap on swaps per layer and kind (default ``10 * width``).

    Returns:
      A :class:`ModuleSelection`.
    """
    _check_budget(budget)
    head, ffn = np.asarray(head, np.float64), np.asarray(ffn, np.float64)
    if head.ndim != 2 or ffn.ndim != 2 or head.shape[0] != ffn.shape[0]:
        raise ValueError(f"head [L, H] and ffn [L, F] scores needed, got {head.shape}, {ffn.shape}")
    if head_cost <= 0 or filter_cost <= 0:
        raise ValueError("head_cost and filter_cost must be > 0")
    for name, block, diag in (("head_block", head_block, head), ("ffn_block", ffn_block, ffn)):
        if block is not None and np.asarray(block).shape != diag.shape + diag.shape[1:]:
            raise ValueError(f"{name} must have shape {diag.shape + diag.shape[1:]}")
    heads, filters, total = _warm_start(head, ffn, budget, head_cost, filter_cost)
    hb = np.asarray(head_block) if head_block is not None else None
    fb = np.asarray(ffn_block) if ffn_block is not None else None

    def objective(h, f):
        value = block_objective(h, hb) if hb is not None else float((head * h).sum())
        value += block_objective(f, fb) if fb is not None else float((ffn * f).sum())
        return value

    warm = objective(heads, filters)
    swaps = 0
    if greedy:
        for sel, block in ((heads, hb), (filters, fb)):
            if block is None:
                continue
            cap = max_swaps if max_swaps is not None else 10 * sel.shape[1]
            for layer in range(sel.shape[0]):
                sel[layer], n = _greedy_layer(sel[layer], block[layer], cap)
                swaps += n
    cost = heads.sum() * head_cost + filters.sum() * filter_cost
    return ModuleSelection(
        heads, filters, warm, objective(heads, filters), swaps, float(cost / total)
    )


def select_modules(
    forget: MaskFisher,
    retain: MaskFisher,
    shape: ModuleShape,
    *,
    budget: float,
    lam: float = 1.0,
    greedy: bool = True,
) -> ModuleSelection:
    """MAPE's selection from the forget and retain mask Fishers (see the module docstring).

    Args:
      forget, retain: :class:`~jaxtrust.unlearning.mape.fisher.MaskFisher` on D_f and D_r.
      shape: the model's :class:`~jaxtrust.unlearning.mape.fisher.ModuleShape` (costs).
      budget: fraction of the head+filter parameters to update, in (0, 1].
      lam: weight :math:`\\lambda \\ge 0` of the retain Fisher.
      greedy: refine the ranking warm start with greedy intra-layer swaps.

    Returns:
      A :class:`ModuleSelection`.
    """
    _check_budget(budget)
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if forget.head.shape != retain.head.shape or forget.ffn.shape != retain.ffn.shape:
        raise ValueError("forget and retain Fishers come from different models")

    def norm(f: MaskFisher) -> float:
        t = float(f.head.sum() + f.ffn.sum())
        return t if t > 0 else 1.0

    zf, zr = norm(forget), norm(retain)
    return select_modules_from_scores(
        head=forget.head / zf - lam * retain.head / zr,
        ffn=forget.ffn / zf - lam * retain.ffn / zr,
        head_block=forget.head_block / zf - lam * retain.head_block / zr,
        ffn_block=forget.ffn_block / zf - lam * retain.ffn_block / zr,
        budget=budget,
        head_cost=shape.head_cost,
        filter_cost=shape.filter_cost,
        greedy=greedy,
    )
