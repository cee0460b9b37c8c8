"""The technique registry: every approximation by name, its reference, and spec strings.

:func:`technique` builds a configuration by name, :func:`parse_technique` from a spec string
(``"teal:sparsity=0.5;layers=[0,1]"``, the form a reproduction's config and the command line
use), and :func:`technique_label` names a configured technique in reports. ``REFERENCES`` says,
for each name, its family, the work it reproduces and how faithfully.

Example:
  >>> technique_label(parse_technique("smoothquant:bits=4;layers=[0,2]"))
  'smoothquant(4)[0:2]'
"""

from __future__ import annotations

import json

from jaxtrust.safety.actapprox._base import Technique
from jaxtrust.safety.actapprox.noise import GaussianNoise, LaplaceNoise
from jaxtrust.safety.actapprox.polynomial import POLYNOMIALS, Polynomial
from jaxtrust.safety.actapprox.quantization import OmniQuant, SmoothQuant
from jaxtrust.safety.actapprox.sparsity import Cats, Teal

__all__ = [
    "KNOWN_TECHNIQUES",
    "REFERENCES",
    "TECHNIQUES",
    "parse_technique",
    "technique",
    "technique_label",
]

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

_CLASSES: dict[str, type[Technique]] = {
    **dict.fromkeys(POLYNOMIALS, Polynomial),
    "teal": Teal,
    "cats": Cats,
    "smoothquant": SmoothQuant,
    "omniquant": OmniQuant,
    "gaussian_noise": GaussianNoise,
    "laplace_noise": LaplaceNoise,
}
KNOWN_TECHNIQUES: tuple[str, ...] = tuple(_CLASSES)
_QUADA = "Zhang et al., Activation Approximations ... Safety (QuadA), USENIX Sec. 2025"
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
    "gaussian_noise": ("noise", _QUADA, "faithful noise proxy"),
    "laplace_noise": ("noise", _QUADA, "faithful noise proxy"),
}
"""name -> (family, reference, what is reproduced), for reports."""


def technique(name: str, **params) -> Technique:
    """A technique configuration by name.

    Args:
      name: one of ``KNOWN_TECHNIQUES``: the seven of ``TECHNIQUES`` plus "cats",
        "gaussian_noise", "laplace_noise".
      **params: the technique's fields (e.g. ``sparsity=0.5``, ``bits=4``, ``sigma=0.05``,
        ``layers=(0, 2)``); ``strength=`` is accepted as an alias of the strength field
        (sparsity / bits / sigma / scale).

    Returns:
      The frozen :class:`~jaxtrust.safety.actapprox.Technique`.

    Raises:
      KeyError: unknown name (lists the known ones). TypeError / ValueError: bad parameters.

    Example:
      >>> technique("gaussian_noise", strength=0.1, layers=(0, 2))
      GaussianNoise(layers=(0, 2), site='activation', sigma=0.1)
    """
    if name not in _CLASSES:
        raise KeyError(f"unknown technique {name!r}; known: {', '.join(KNOWN_TECHNIQUES)}")
    cls = _CLASSES[name]
    if "strength" in params:
        field = cls.strength_field
        if field is None:
            raise TypeError(f"{name} has no strength parameter")
        if field in params:
            raise TypeError(f"give either strength= or {field}=, not both")
        params[field] = params.pop("strength")
    if "layers" in params and isinstance(params["layers"], list):
        params["layers"] = tuple(params["layers"])
    if cls is Polynomial:
        params["name"] = name
    return cls(**params)


def parse_technique(spec: str) -> Technique:
    """A technique from its spec string ``"name"`` or ``"name:param=value;param=value"``.

    Values are parsed as JSON where they parse (lists become tuples), else kept as strings.

    Args:
      spec: the spec string.

    Returns:
      ``technique(name, **params)``.

    Raises:
      TypeError: ``spec`` is not a string. ValueError: a parameter is not ``key=value``.
      KeyError: unknown technique name.

    Example:
      >>> parse_technique("teal:sparsity=0.5;layers=[0,1]").layers
      (0, 1)
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str like 'teal:sparsity=0.5', got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(";")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(
                f"technique spec {spec!r}: parameter {item!r} must look like key=value"
            )
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        params[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return technique(name.strip(), **params)


def technique_label(t: Technique) -> str:
    """A short name for reports: ``name``, ``name(strength)``, plus ``[start:stop]`` layers.

    Example:
      >>> technique_label(technique("teal", sparsity=0.5, layers=(0, 1)))
      'teal(0.5)[0:1]'
    """
    if not isinstance(t, Technique):
        raise TypeError(f"t must be a Technique, got {type(t).__name__}")
    strength = t.strength
    label = t.name if strength is None else f"{t.name}({strength:g})"
    if t.layers is not None:
        label += f"[{t.layers[0]}:{t.layers[1]}]"
    return label
