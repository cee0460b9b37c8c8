"""Data: tokenizers and batching for generated worlds, and the worlds themselves.

Every method in jaxtrust is demonstrated on models trained in-house on generated "worlds"
(no dataset is ever downloaded), plus the real assets that ship inside packages.
"""

from jaxtrust.data.arithmetic import ArithmeticWorld, Example
from jaxtrust.data.batching import Batch, collate
from jaxtrust.data.vocab import SPECIAL_TOKENS, WordTokenizer

__all__ = [
    "ArithmeticWorld",
    "Batch",
    "Example",
    "SPECIAL_TOKENS",
    "WordTokenizer",
    "collate",
]

# The safety world (appended: SPF / zoo issue).
from jaxtrust.data.safety_world import FINETUNE_ATTACKS, REFUSALS, SafetyWorld  # noqa: E402

__all__ += ["FINETUNE_ATTACKS", "REFUSALS", "SafetyWorld"]
