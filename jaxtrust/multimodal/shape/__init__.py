"""SHAPE: self-improved visual preference alignment with holistic winners (Chen et al., 2025).

The method: :func:`augment_views` (visual augmentations without flips), :func:`summarise` (the
consensus merge that stands in for SHAPE's summariser), :func:`build_triplets` (image, holistic
winner, terse loser), the baselines :func:`seva_pairs` and :func:`shuffle_losers`, the VLM's
DPO forward :func:`vlm_logits` (for :func:`jaxtrust.training.dpo_finetune`), and the
hallucination probes :func:`pope_probes` / :func:`pope_scores` / :func:`chair`. The test bed
(:mod:`.world`) and the reproduction (:mod:`.reproduce`) are not imported here.
"""

from jaxtrust.multimodal.shape.augment import AUGMENTATIONS, augment, augment_views
from jaxtrust.multimodal.shape.evaluate import (
    POPE_SPLITS,
    Probes,
    chair,
    pope_probes,
    pope_scores,
)
from jaxtrust.multimodal.shape.summarise import caption_of, consensus, mentions, summarise
from jaxtrust.multimodal.shape.triplets import (
    Triplets,
    build_triplets,
    preference_data,
    seva_pairs,
    shuffle_losers,
    vlm_logits,
)

__all__ = [
    "AUGMENTATIONS",
    "POPE_SPLITS",
    "Probes",
    "Triplets",
    "augment",
    "augment_views",
    "build_triplets",
    "caption_of",
    "chair",
    "consensus",
    "mentions",
    "pope_probes",
    "pope_scores",
    "preference_data",
    "seva_pairs",
    "shuffle_losers",
    "summarise",
    "vlm_logits",
]
