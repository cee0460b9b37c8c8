"""Membership inference: per-sample attacks, the SVC "MIA-efficacy" and LiRA.

* :mod:`~jaxtrust.privacy.mia.scores` — loss, confidence, entropy, modified-entropy and
  logit-scaled-confidence scores from logits; :func:`predict_logits` of a model over an array.
* :mod:`~jaxtrust.privacy.mia.lm` — sequence-level LM scores (loss, zlib, Min-K%, Min-K%++) and
  the Dataset-Inference feature matrix.
* :mod:`~jaxtrust.privacy.mia.metrics` — ROC, AUC and TPR at 0.1 % / 1 % FPR.
* :mod:`~jaxtrust.privacy.mia.svc` — the unlearning literature's SVC MIA-efficacy (SalUn).
* :mod:`~jaxtrust.privacy.mia.lira` — LiRA online/offline, shadow models trained as one
  vmapped (and optionally device-sharded) batch.

Shared by the unlearning methods (:mod:`jaxtrust.unlearning`) and memorization audits.
"""

from jaxtrust.privacy.mia.lira import (
    ShadowModels,
    balanced_in_masks,
    lira_evaluate,
    lira_leave_one_out,
    lira_scores,
    stacked_logits,
    train_shadow_models,
)
from jaxtrust.privacy.mia.lm import (
    LM_SCORES,
    TokenStats,
    lm_features,
    lm_membership_scores,
    token_statistics,
)
from jaxtrust.privacy.mia.metrics import ROCMetrics, roc_metrics, tpr_at_fpr
from jaxtrust.privacy.mia.scores import (
    SCORES,
    logit_confidence,
    membership_scores,
    predict_logits,
)
from jaxtrust.privacy.mia.svc import SVCMIAResult, svc_mia_efficacy, svc_mia_from_logits

__all__ = [
    "LM_SCORES",
    "TokenStats",
    "lm_features",
    "lm_membership_scores",
    "token_statistics",
    "ROCMetrics",
    "SCORES",
    "SVCMIAResult",
    "ShadowModels",
    "balanced_in_masks",
    "lira_evaluate",
    "lira_leave_one_out",
    "lira_scores",
    "logit_confidence",
    "membership_scores",
    "predict_logits",
    "roc_metrics",
    "stacked_logits",
    "svc_mia_efficacy",
    "svc_mia_from_logits",
    "tpr_at_fpr",
    "train_shadow_models",
]
