"""Evaluation core: responses to a prompt set, perplexity, refusal/compliance judges and the
summaries every reproduction reports. One definition of each, used by every method.

* :func:`generate_responses` — chunked greedy or sampled KV-cache generation, decoded.
* :func:`sequence_nll`, :func:`perplexity` — masked NLL per row, token-weighted perplexity.
* judges (:mod:`jaxtrust.eval.judges`) — exact and opener refusal for generated worlds, the
  keyword judge of the jailbreak literature, exact-match accuracy.
* :func:`mean_se`, :func:`proportion_se`, :func:`claim_count`, :func:`seed_summary`.
"""

from jaxtrust.eval.judges import (
    REFUSAL_KEYWORDS,
    exact_match_accuracy,
    harmful_score,
    is_jailbroken,
    is_opener_refusal,
    is_refusal,
    keyword_attack_success_rate,
    keyword_refusal_rate,
    opener_refusal_rate,
    over_refusal_rate,
    refusal_rate,
    safety_report,
)
from jaxtrust.eval.perplexity import lm_metrics, perplexity, row_nll, sequence_nll
from jaxtrust.eval.responses import Responses, generate_responses, special_ids
from jaxtrust.eval.stats import MeanSE, claim_count, mean_se, proportion_se, seed_summary

__all__ = [
    "REFUSAL_KEYWORDS",
    "MeanSE",
    "Responses",
    "claim_count",
    "exact_match_accuracy",
    "generate_responses",
    "harmful_score",
    "is_jailbroken",
    "is_opener_refusal",
    "is_refusal",
    "keyword_attack_success_rate",
    "keyword_refusal_rate",
    "lm_metrics",
    "mean_se",
    "opener_refusal_rate",
    "over_refusal_rate",
    "perplexity",
    "proportion_se",
    "refusal_rate",
    "row_nll",
    "safety_report",
    "seed_summary",
    "sequence_nll",
    "special_ids",
]
