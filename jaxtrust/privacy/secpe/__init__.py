"""SecPE: private, robust prompt ensembling (Zhang, Chen, Feng, Lou, Song, Liu, Yang, ECAI 2024,
arXiv:2502.00847).

The method over any jaxtrust causal LM, in plaintext JAX:

* :mod:`~jaxtrust.privacy.secpe.prompts` — templates and a verbalizer (:class:`PromptEnsemble`);
* :mod:`~jaxtrust.privacy.secpe.ensemble` — per-prompt class scores in one jitted forward,
  the soft vote and its argmax, the verbalizer as a linear map of the answer hidden state;
* :mod:`~jaxtrust.privacy.secpe.attack` — HotFlip-ranked greedy token substitutions against one
  prompt or the ensemble.

The encrypted half (the soft vote's argmax under TFHE or CKKS) is the backend :mod:`jaxtrust.fhe`;
the reproduction is :mod:`jaxtrust.privacy.secpe.reproduce` (``jaxtrust reproduce secpe``), with
its generated tasks in :mod:`~jaxtrust.privacy.secpe.sentiment`.
"""

from jaxtrust.privacy.secpe.attack import AttackResult, attack, robust_accuracy
from jaxtrust.privacy.secpe.ensemble import (
    ensemble_argmax,
    prompt_predictions,
    prompt_scores,
    soft_vote,
    verbalizer_weights,
)
from jaxtrust.privacy.secpe.prompts import (
    SCORE_MODES,
    EncodedTexts,
    PromptEnsemble,
    Verbalizer,
)

__all__ = [
    "SCORE_MODES",
    "AttackResult",
    "EncodedTexts",
    "PromptEnsemble",
    "Verbalizer",
    "attack",
    "ensemble_argmax",
    "prompt_predictions",
    "prompt_scores",
    "robust_accuracy",
    "soft_vote",
    "verbalizer_weights",
]
