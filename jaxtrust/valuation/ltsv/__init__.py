"""LTSV (Wu et al., 2025): time-series data valuation on a time-series foundation model by
one-step in-context fine-tuning, with temporal block aggregation. The reproduction is
``jaxtrust reproduce ltsv`` (:mod:`jaxtrust.valuation.ltsv.reproduce`)."""

from jaxtrust.valuation.ltsv.method import (
    BlockScores,
    aggregate_blocks,
    ltsv_scores,
    ltsv_scores_loop,
)

__all__ = ["BlockScores", "aggregate_blocks", "ltsv_scores", "ltsv_scores_loop"]
