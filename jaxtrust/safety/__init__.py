"""Safety: one subpackage per paper.

* :mod:`jaxtrust.safety.spf` — safety-preserving fine-tuning (SPF) as an optax transform, its
  subspace and geometry tools, and its baselines.
* :mod:`jaxtrust.safety.recovery` — one-shot safety recovery.
* :mod:`jaxtrust.safety.actapprox` — the activation-approximation safety audit and QuadA.

Example::

    from jaxtrust.safety.spf import spf
    from jaxtrust.safety.recovery import recover
"""

from jaxtrust.safety import actapprox, recovery, spf

__all__ = ["actapprox", "recovery", "spf"]
