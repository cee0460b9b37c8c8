"""One-shot safety recovery: re-align a fine-tuned model with a single refusal example.

* :func:`recover` — fine-tune on one (harmful prompt, refusal) pair, chosen from a pool by a
  selection rule, as one compiled program.
* ``reproduce`` — ``jaxtrust reproduce oneshot`` (imported by the registry, not here).
"""

from jaxtrust.safety.recovery.recover import SELECTIONS, RecoveryResult, recover

__all__ = ["SELECTIONS", "RecoveryResult", "recover"]
