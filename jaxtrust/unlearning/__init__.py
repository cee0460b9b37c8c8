"""Machine unlearning: the standard baselines, MAPE-Unlearn and RSU (both reconstructed).

* :mod:`~jaxtrust.unlearning.baselines` — Retrain, FT, GA, NegGrad+, RL, l1-sparse, SalUn, SSD,
  NPO behind one ``unlearn(method, model, forget, retain, config, seed=)`` interface.
* :mod:`~jaxtrust.unlearning.transforms` — an element-wise update mask as an optax transform.
* :mod:`~jaxtrust.unlearning.metrics` — UA, RA, TA, MIA-efficacy, average gap to Retrain.
* :mod:`~jaxtrust.unlearning.mape` — MAPE-Unlearn (module-aware, Fisher-selected heads/filters).
* :mod:`~jaxtrust.unlearning.rsu` — RSU (rank by privacy risk, unlearn in sequence).
* :mod:`~jaxtrust.unlearning.protocol` — the shared evaluation protocol of the reproductions.
"""
