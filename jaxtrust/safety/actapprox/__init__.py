"""Activation approximations of private and efficient inference, as declarative techniques.

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

Example::

    from jaxtrust.safety.actapprox import technique, calibrate, approx_hooks
    techs = calibrate([technique("teal", sparsity=0.5, layers=(0, 4))], model, tokens, mask)
    logits = model(tokens, attention_mask=mask, hooks=approx_hooks(techs, model.config)).logits
    noise = technique("gaussian_noise", sigma=0.05, layers=(0, 2))  # early layers only
    noisy = approx_hooks(noise, model.config, rng=jax.random.key(0))
"""

from __future__ import annotations

import functools

from jaxtrust.safety.actapprox._base import FAMILIES, LINEAR_INPUT_SITES, SITES, FrozenArray, Technique
from jaxtrust.safety.actapprox._calibration import ActivationRecord, calibrate, record_activations
from jaxtrust.safety.actapprox._error import approximation_error
from jaxtrust.safety.actapprox._hooks import ApproxHooks, approx_hooks
from jaxtrust.safety.actapprox.noise import GaussianNoise, LaplaceNoise
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
from jaxtrust.safety.actapprox.quantization import (
    OmniQuant,
    SmoothQuant,
    fake_quantize,
    quantization_error,
    smoothing_scales,
)
from jaxtrust.safety.actapprox.sparsity import Cats, Teal

TECHNIQUES: tuple[str, ...] = (
    "iron",
    "bolt",
    "bumblebee",
    "nexus",
    "teal",
    "smoothquant",
    "omniquant",
)
"""The paper's seven techniques, in its table's order."""

_FACTORIES = {
    **{name: functools.partial(Polynomial, name=name) for name in POLYNOMIALS},
    "teal": Teal,
    "cats": Cats,
    "smoothquant": SmoothQuant,
    "omniquant": OmniQuant,
    "gaussian_noise": GaussianNoise,
    "laplace_noise": LaplaceNoise,
}
KNOWN_TECHNIQUES: tuple[str, ...] = tuple(_FACTORIES)
REFERENCES: dict[str, tuple[str, str, str]] = {
    "iron": (
        "polynomial",
        "Hao et al., Iron: Private Inference on Transformers, NeurIPS 2022",
        "stand-in: fixed-point tanh/sigmoid GELU/SiLU",
    ),
    "bolt": (
        "polynomial",
        "Pang et al., BOLT, IEEE S&P 2024",
        "faithful GELU polynomial; SiLU refit",
    ),
    "bumblebee": (
        "polynomial",
        "Lu et al., BumbleBee, NDSS 2025",
        "faithful GELU polynomial; SiLU refit",
    ),
    "nexus": (
        "polynomial",
        "Zhang et al., Secure Transformer Inference Made Non-interactive (NEXUS), NDSS 2025",
        "faithful GELU polynomial and regions; SiLU refit",
    ),
    "teal": (
        "sparsification",
        "Liu et al., Training-Free Activation Sparsity in LLMs (TEAL), ICLR 2025",
        "faithful, uniform sparsity",
    ),
    "cats": ("sparsification", "Lee et al., CATS, COLM 2024", "faithful thresholding"),
    "smoothquant": (
        "quantization",
        "Xiao et al., SmoothQuant, ICML 2023",
        "faithful W16 per-token activation quantization",
    ),
    "omniquant": (
        "quantization",
        "Shao et al., OmniQuant, ICLR 2024",
        "closest variant: LET + learned clipping, per-layer reconstruction",
    ),
    "gaussian_noise": (
        "noise",
        "Zhang et al., Activation Approximations ... Safety (QuadA), USENIX Sec. 2025",
        "faithful noise proxy",
    ),
    "laplace_noise": (
        "noise",
        "Zhang et al., Activation Approximations ... Safety (QuadA), USENIX Sec. 2025",
        "faithful noise proxy",
    ),
}
"""name -> (family, reference, what is reproduced), for reports."""
_STRENGTH_PARAM = {
    "teal": "sparsity",
    "cats": "sparsity",
    "smoothquant": "bits",
    "omniquant": "bits",
    "gaussian_noise": "sigma",
    "laplace_noise": "scale",
}


def technique(name: str, **params) -> Technique:
    """A technique configuration by name.

    Args:
      name: one of ``KNOWN_TECHNIQUES``: the seven of ``TECHNIQUES`` plus "cats",
        "gaussian_noise", "laplace_noise".
      **params: the technique's fields (e.g. ``sparsity=0.5``, ``bits=4``, ``sigma=0.05``,
        ``layers=(0, 2)``); ``strength=`` is accepted as an alias of the strength field
        (sparsity / bits / sigma / scale).

    Raises:
      KeyError: unknown name (lists the known ones). TypeError / ValueError: bad parameters.

    Example:
      >>> technique("gaussian_noise", strength=0.1, layers=(0, 2))
      GaussianNoise(layers=(0, 2), site='activation', sigma=0.1)
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown technique {name!r}; known: {', '.join(KNOWN_TECHNIQUES)}")
    if "strength" in params:
        if name not in _STRENGTH_PARAM:
            raise TypeError(f"{name} has no strength parameter")
        key = _STRENGTH_PARAM[name]
        if key in params:
            raise TypeError(f"give either strength= or {key}=, not both")
        params[key] = params.pop("strength")
    if "layers" in params and isinstance(params["layers"], list):
        params["layers"] = tuple(params["layers"])
    return _FACTORIES[name](**params)


__all__ = [
    "FAMILIES",
    "KNOWN_TECHNIQUES",
    "LINEAR_INPUT_SITES",
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
    "LaplaceNoise",
    "OmniQuant",
    "Polynomial",
    "SmoothQuant",
    "Teal",
    "Technique",
    "approx_hooks",
    "approximation_error",
    "calibrate",
    "composite_sign",
    "exact_activation",
    "exp_approx",
    "fake_quantize",
    "polynomial_error",
    "quantization_error",
    "record_activations",
    "smoothing_scales",
    "softmax_approx",
    "technique",
]
