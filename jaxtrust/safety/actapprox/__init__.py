"""The activation-approximation safety audit and its defence, QuadA, in one package.

Zhang et al., "Activation Approximations Can Incur Safety Vulnerabilities Even in Aligned
LLMs: Comprehensive Analysis and Defense", USENIX Security 2025 (arXiv 2502.00840), audit
seven techniques in three families. Here each is a frozen, hashable configuration object
(``family``, ``name``, a ``strength``, ``layers``), composed into one
:class:`~jaxtrust.models.ModelHooks` so any jaxtrust LM runs approximated without code edits:

==============  ===========  ===================================  ==========================
family          name         reference                            reproduction
==============  ===========  ===================================  ==========================
polynomial      iron         Hao et al., Iron, NeurIPS 2022       stand-in (fixed-point tanh)
polynomial      bolt         Pang et al., BOLT, IEEE S&P 2024     faithful GELU polynomial
polynomial      bumblebee    Lu et al., BumbleBee, NDSS 2025      faithful GELU polynomial
polynomial      nexus        Zhang et al., NEXUS, NDSS 2025       faithful GELU polynomial
sparsification  teal         Liu et al., TEAL, ICLR 2025          faithful (uniform variant)
quantization    smoothquant  Xiao et al., SmoothQuant, ICML 2023  faithful (W16, per-token)
quantization    omniquant    Shao et al., OmniQuant, ICLR 2024    closest variant (LET+clip)
==============  ===========  ===================================  ==========================

Also: ``cats`` (Lee et al., CATS, COLM 2024; sparsification of the MLP activation) and the
paper's noise proxies ``gaussian_noise`` (sigma, on the FFN activation) and ``laplace_noise``
(scale, on the down-projection input). SiLU versions of the GELU polynomials keep the published
structure with refitted coefficients (see :mod:`~jaxtrust.safety.actapprox.polynomial`); each
module's docstring states what is faithful and what is a stand-in.

The package:

* techniques — :mod:`~jaxtrust.safety.actapprox.polynomial`,
  :mod:`~jaxtrust.safety.actapprox.sparsity`, :mod:`~jaxtrust.safety.actapprox.quantization`,
  :mod:`~jaxtrust.safety.actapprox.noise`; the registry :func:`technique` /
  :func:`parse_technique` (:mod:`~jaxtrust.safety.actapprox.techniques`); :func:`calibrate`;
  :func:`approx_hooks`; :func:`approximation_error`;
* :class:`HookedLM` — a model bound to techniques, for generation and perplexity under noise;
* :mod:`~jaxtrust.safety.actapprox.quada` — QuadA: DPO under the audit's own Gaussian noise on
  the first ``tau`` layers (:func:`quada_noise`) plus activation clustering;
* :mod:`~jaxtrust.safety.actapprox.audit` — the paper's claims read off a noise sweep;
* ``reproduce`` — ``jaxtrust reproduce actapprox`` (imported by the experiment registry, not
  here).

Example::

    from jaxtrust.safety.actapprox import technique, calibrate, approx_hooks
    techs = calibrate([technique("teal", sparsity=0.5, layers=(0, 4))], model, tokens, mask)
    logits = model(tokens, attention_mask=mask, hooks=approx_hooks(techs, model.config)).logits
    noise = technique("gaussian_noise", sigma=0.05, layers=(0, 2))  # early layers only
    noisy = approx_hooks(noise, model.config, rng=jax.random.key(0))
"""

from __future__ import annotations

from jaxtrust.safety.actapprox._base import (
    FAMILIES,
    LINEAR_INPUT_SITES,
    SITES,
    FrozenArray,
    Technique,
)
from jaxtrust.safety.actapprox._calibration import (
    ActivationRecord,
    calibrate,
    record_activations,
)
from jaxtrust.safety.actapprox._error import approximation_error
from jaxtrust.safety.actapprox._hooks import ApproxHooks, approx_hooks
from jaxtrust.safety.actapprox.audit import SweepClaims, first_crossing, mva_sigma, sweep_claims
from jaxtrust.safety.actapprox.hooked import HookedLM
from jaxtrust.safety.actapprox.noise import NOISE_SITES, GaussianNoise, LaplaceNoise
from jaxtrust.safety.actapprox.polynomial import (
    POLYNOMIALS,
    STATED_MAX_ERROR,
    Polynomial,
    composite_sign,
    exact_activation,
    exp_approx,
    polynomial_error,
    softmax_approx,
)
from jaxtrust.safety.actapprox.quada import (
    QuadAConfig,
    QuadAResult,
    activation_cluster_loss,
    make_quada_loss,
    pooled_prompt_activations,
    quada_align,
    quada_noise,
)
from jaxtrust.safety.actapprox.quantization import (
    OmniQuant,
    SmoothQuant,
    fake_quantize,
    outlier_activations,
    quantization_error,
    smoothing_scales,
)
from jaxtrust.safety.actapprox.sparsity import Cats, Teal
from jaxtrust.safety.actapprox.techniques import (
    KNOWN_TECHNIQUES,
    REFERENCES,
    TECHNIQUES,
    parse_technique,
    technique,
    technique_label,
)

__all__ = [
    "FAMILIES",
    "KNOWN_TECHNIQUES",
    "LINEAR_INPUT_SITES",
    "NOISE_SITES",
    "POLYNOMIALS",
    "REFERENCES",
    "SITES",
    "STATED_MAX_ERROR",
    "TECHNIQUES",
    "ActivationRecord",
    "ApproxHooks",
    "Cats",
    "FrozenArray",
    "GaussianNoise",
    "HookedLM",
    "LaplaceNoise",
    "OmniQuant",
    "Polynomial",
    "QuadAConfig",
    "QuadAResult",
    "SmoothQuant",
    "SweepClaims",
    "Teal",
    "Technique",
    "activation_cluster_loss",
    "approx_hooks",
    "approximation_error",
    "calibrate",
    "composite_sign",
    "exact_activation",
    "exp_approx",
    "fake_quantize",
    "first_crossing",
    "make_quada_loss",
    "mva_sigma",
    "outlier_activations",
    "parse_technique",
    "polynomial_error",
    "pooled_prompt_activations",
    "quada_align",
    "quada_noise",
    "quantization_error",
    "record_activations",
    "smoothing_scales",
    "softmax_approx",
    "sweep_claims",
    "technique",
    "technique_label",
]
