"""RSU (reconstructed): rank the forget set by privacy risk, then unlearn it in sequence.

* :mod:`~jaxtrust.unlearning.rsu.ranking` — LiRA, loss and memorization risks; risk-ordered stages.
* :mod:`~jaxtrust.unlearning.rsu.method` — SeqUnlearn with any base algorithm.
* :mod:`~jaxtrust.unlearning.rsu.reproduce` — ``jaxtrust reproduce rsu``.
"""

from jaxtrust.unlearning.rsu.method import RSUConfig, RSUResult, seq_unlearn
from jaxtrust.unlearning.rsu.ranking import (
    ORDERS,
    lira_risk,
    loss_risk,
    memorization_risk,
    split_by_risk,
)

__all__ = [
    "ORDERS",
    "RSUConfig",
    "RSUResult",
    "lira_risk",
    "loss_risk",
    "memorization_risk",
    "seq_unlearn",
    "split_by_risk",
]
