"""AQUA: watermarking image knowledge in multimodal RAG (Chen, Lou, Wang, ICLR 2026).

* :mod:`~jaxtrust.multimodal.aqua.watermarks`: acronym cards, spatial-relation scenes and the
  naive canary, with their probe queries, generated from a key;
* :mod:`~jaxtrust.multimodal.aqua.audit`: insertion into a service's base, probing through the
  text interface, calibration of the clean rate and the pooled binomial test;
* :mod:`~jaxtrust.multimodal.aqua.verify`: the statistics (exact binomial, Clopper-Pearson,
  AQUA's released Welch test for comparison);
* :mod:`~jaxtrust.multimodal.aqua.baselines`: the optimised adversarial image;
* :mod:`~jaxtrust.multimodal.aqua.robustness` and :mod:`~jaxtrust.multimodal.aqua.metrics`:
  transforms, rank, harmlessness, stealth and a query filter;
* :mod:`~jaxtrust.multimodal.aqua.testbed` and :mod:`~jaxtrust.multimodal.aqua.reproduce`:
  the reproduction (``jaxtrust reproduce aqua``).
"""
