"""SecPE's own encrypted argmax in CKKS (OpenFHE): the rotation tournament, the sequential baseline
and OpenFHE's scheme-switching argmax.

SecPE (Zhang et al., ECAI 2024, arXiv:2502.00847) packs the k summed class scores into the slots
of one CKKS ciphertext and takes a log-depth *tournament*::

    x <- x + rot(x, -K)                        duplicate, so cyclic windows of length K work
    a <- x
    for i in 0 .. log2(K) - 1:
        b <- rot(a, 2^i)
        a <- (a + b)/2 + (a - b)/2 * sgn(a - b)    slot-wise max(a, b)
        refresh(a)
    one_hot <- sgn(x - a) + 1                  1 where x is the maximum, ~0 elsewhere

``sgn`` is the composite odd polynomial ``f4 o f4 o g4 o g4`` (``g4`` applied first) of Cheon,
Kim, Kim, Lee (Asiacrypt 2020), on inputs scaled into ``[-1, 1]``. The *sequential* baseline
(Phoenix's O(k) argmax, Jovanovic et al., CCS 2022) is the same max step against ``rot(x, i)``
for i = 1 .. k-1: k - 1 signs instead of log2 k. The ciphertext is refreshed *client-aided*
(decrypt and re-encrypt, one round trip each, counted), as SecPE's released code does between
tournament steps; here also after each of the sign's four polynomials, so the depth stays at 5
(one polynomial) and 128-bit parameters need a 2^15 ring rather than 2^16. CKKS bootstrapping is
the non-interactive alternative and is not run here.
``scheme_switching`` is OpenFHE's ``EvalMaxSchemeSwitching`` (CKKS -> FHEW comparisons -> CKKS),
which returns the one-hot argmax without a polynomial sign.

CKKS is approximate: the client reads the first index whose decrypted one-hot value exceeds 1/2.
That equals numpy's argmax (lowest index on ties: tied maxima all read as ~1) when the gap between
the top value and the others exceeds the sign polynomial's resolution; the error rate is reported
with the smallest input gap it occurred at. Needs ``openfhe`` (a Python 3.10 wheel): the
environment ``.venv-ckks``, reached by delegation from the main environment.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import numpy as np

from jaxtrust.fhe.registry import entry_point

__all__ = ["CKKS_VARIANTS", "F4", "G4", "composite_sign", "run_ckks_argmax"]

CKKS_VARIANTS: tuple[str, ...] = ("tournament", "sequential", "scheme_switching")
# Odd polynomials in the power basis (x^1, x^3, ..., x^9): f4 (Cheon et al. 2020, Table 1) and g4.
F4 = np.array([315, -420, 378, -180, 35], np.float64) / 2**7
G4 = np.array([5850, -34974, 97015, -113492, 46623], np.float64) / 2**10


def _odd_poly(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    return sum(ci * x ** (2 * i + 1) for i, ci in enumerate(c))


def composite_sign(x: np.ndarray, d_g: int = 2, d_f: int = 2) -> np.ndarray:
    """Plaintext ``f4^{d_f} o g4^{d_g}`` (the sign approximation the circuit evaluates): ``g4``
    first pushes small inputs away from 0 fast, ``f4`` then flattens them onto +-1.

    Example:
      >>> composite_sign(np.array([-0.5, 0.0, 0.25])).round(3).tolist()
      [-1.0, 0.0, 1.0]
    """
    y = np.asarray(x, np.float64)
    for _ in range(d_g):
        y = _odd_poly(G4, y)
    for _ in range(d_f):
        y = _odd_poly(F4, y)
    return y


def _coefficients(c: np.ndarray) -> list[float]:
    out = [0.0] * (2 * len(c))
    for i, ci in enumerate(c):
        out[2 * i + 1] = float(ci)
    return out


def _evaluation_key_bytes(ofhe: Any, cc: Any) -> int | None:
    """Bytes of the relinearization + rotation keys (what the server needs), serialized."""
    with tempfile.TemporaryDirectory() as tmp:
        total = 0
        for name, fn in (("mult", "SerializeEvalMultKey"), ("rot", "SerializeEvalAutomorphismKey")):
            path = os.path.join(tmp, name)
            try:
                if not getattr(cc, fn)(path, ofhe.BINARY):
                    return None
            except (AttributeError, TypeError, RuntimeError):
                return None
            total += os.path.getsize(path)
    return total


class _Context:
    """A CKKS context with keys, encryption, client-aided refresh and the sign polynomial."""

    def __init__(self, slots: int, depth: int, rotations: list[int], security: str):
        import openfhe as ofhe

        self.ofhe = ofhe
        params = ofhe.CCParamsCKKSRNS()
        params.SetMultiplicativeDepth(depth)
        params.SetScalingModSize(40)
        params.SetFirstModSize(50)
        params.SetBatchSize(slots)
        params.SetSecurityLevel(
            ofhe.SecurityLevel.HEStd_128_classic if security == "128" else ofhe.HEStd_NotSet
        )
        if security != "128":
            params.SetRingDim(max(2 * slots, 1 << 12))
        self.cc = ofhe.GenCryptoContext(params)
        for feature in (ofhe.PKE, ofhe.KEYSWITCH, ofhe.LEVELEDSHE, ofhe.ADVANCEDSHE):
            self.cc.Enable(feature)
        t0 = time.perf_counter()
        self.keys = self.cc.KeyGen()
        self.cc.EvalMultKeyGen(self.keys.secretKey)
        self.cc.EvalRotateKeyGen(self.keys.secretKey, sorted(set(rotations)))
        self.keygen_s = time.perf_counter() - t0
        self.key_bytes = _evaluation_key_bytes(ofhe, self.cc)
        self.slots = slots
        self.refreshes = 0
        self.signs = 0

    def encrypt(self, values: np.ndarray) -> Any:
        pt = self.cc.MakeCKKSPackedPlaintext([float(v) for v in values])
        return self.cc.Encrypt(self.keys.publicKey, pt)

    def decrypt(self, ct: Any, length: int) -> np.ndarray:
        pt = self.cc.Decrypt(ct, self.keys.secretKey)
        pt.SetLength(length)
        return np.asarray(pt.GetRealPackedValue()[:length], np.float64)

    def refresh(self, ct: Any) -> Any:
        """Client-aided refresh (SecPE's ``re_encrypt``): one round trip to the key holder."""
        self.refreshes += 1
        return self.encrypt(self.decrypt(ct, self.slots))

    def sign(self, ct: Any) -> Any:
        # A refresh after every polynomial keeps the depth at one polynomial plus the max step,
        # so 128-bit parameters fit a 2^14 ring instead of 2^16 (at the price of 4 round trips).
        self.signs += 1
        for c in (G4, G4, F4, F4):
            ct = self.refresh(self.cc.EvalPoly(ct, _coefficients(c)))
        return ct

    def max(self, a: Any, b: Any) -> Any:
        cc = self.cc
        diff = cc.EvalSub(a, b)
        s = self.sign(diff)
        mean = cc.EvalMult(cc.EvalAdd(a, b), 0.5)
        return cc.EvalAdd(mean, cc.EvalMult(cc.EvalMult(diff, 0.5), s))


POLY_DEPTH = 5  # a degree-9 polynomial in OpenFHE's EvalPoly
MAX_SLOTS = 1 << 12  # inputs packed per ciphertext (SIMD): blocks of 2 * 2^ceil(log2 k) slots


def _polynomial_argmax(values: np.ndarray, variant: str, security: str) -> dict[str, Any]:
    """Tournament or sequential argmax of rows of ``values`` (already scaled into [0, 1/2]).

    Each input fills a block of ``2 W`` slots (``W = 2^ceil(log2 k)``): its k values, a copy of
    them right after (so every cyclic window of length k lies inside the block), zeros after.
    A rotation by ``r < W`` keeps every slot ``j < k`` inside its block, so one ciphertext
    evaluates ``slots / 2W`` inputs at once.
    """
    n, k = values.shape
    width = 1 << max(1, math.ceil(math.log2(k)))
    block = 2 * width
    per_ct = max(1, min(n, MAX_SLOTS // block))
    slots = 1 << math.ceil(math.log2(per_ct * block))
    steps = (
        [1 << i for i in range(int(math.log2(width)))] if variant == "tournament" else range(1, k)
    )
    # Every polynomial starts from a refreshed ciphertext; the max step needs 2 levels after it.
    depth = max(POLY_DEPTH, 2)
    t0 = time.perf_counter()
    ctx = _Context(slots, depth, list(steps), security)
    setup_s = time.perf_counter() - t0
    hots, run_s, enc_s, cts = [], [], [], 0
    for start in range(0, n, per_ct):
        rows = values[start : start + per_ct]
        packed = np.zeros(slots)
        for b, row in enumerate(rows):
            packed[b * block : b * block + k] = row
            packed[b * block + k : b * block + 2 * k] = row
        t1 = time.perf_counter()
        x = ctx.encrypt(packed)
        t2 = time.perf_counter()
        a = x
        for step in steps:
            b_ct = ctx.cc.EvalRotate(x if variant == "sequential" else a, step)
            a = ctx.refresh(ctx.max(a, b_ct))
        hot = ctx.sign(ctx.cc.EvalSub(x, a))
        t3 = time.perf_counter()
        dec = ctx.decrypt(hot, slots) + 1.0  # sgn(0) + 1 = 1 at the maximum, ~0 below it
        hots += [dec[b * block : b * block + k] for b in range(len(rows))]
        enc_s.append(t2 - t1)
        run_s.append(t3 - t2)
        cts += 1
    return {
        "one_hot": np.stack(hots),
        "setup_s": setup_s,
        "keygen_s": ctx.keygen_s,
        "encrypt_s": float(np.median(enc_s)),
        "run_s": float(np.median(run_s)),
        "run_s_per_input": float(np.sum(run_s)) / n,
        "inputs_per_ciphertext": per_ct,
        "depth": depth,
        "ring_dim": int(ctx.cc.GetRingDimension()),
        "evaluation_key_bytes": ctx.key_bytes,
        "signs": ctx.signs // cts,
        "client_refreshes": ctx.refreshes // cts,
    }


def _scheme_switching_argmax(values: np.ndarray, security: str) -> dict[str, Any]:
    import openfhe as ofhe

    n, k = values.shape
    width = 1 << max(1, math.ceil(math.log2(k)))
    depth = 9 + 3 + 1 + int(math.log2(width))
    t0 = time.perf_counter()
    params = ofhe.CCParamsCKKSRNS()
    params.SetMultiplicativeDepth(depth)
    params.SetScalingModSize(50)
    params.SetFirstModSize(60)
    params.SetScalingTechnique(ofhe.FIXEDMANUAL)
    params.SetBatchSize(width)
    secure = security == "128"
    params.SetSecurityLevel(ofhe.HEStd_128_classic if secure else ofhe.HEStd_NotSet)
    if not secure:
        params.SetRingDim(8192)
    cc = ofhe.GenCryptoContext(params)
    for feature in (ofhe.PKE, ofhe.KEYSWITCH, ofhe.LEVELEDSHE, ofhe.ADVANCEDSHE, ofhe.SCHEMESWITCH):
        cc.Enable(feature)
    t1 = time.perf_counter()
    keys = cc.KeyGen()
    sw = ofhe.SchSwchParams()
    sw.SetSecurityLevelCKKS(ofhe.HEStd_128_classic if secure else ofhe.HEStd_NotSet)
    sw.SetSecurityLevelFHEW(ofhe.STD128 if secure else ofhe.TOY)
    sw.SetCtxtModSizeFHEWLargePrec(25)
    sw.SetNumSlotsCKKS(width)
    sw.SetNumValues(width)
    sw.SetComputeArgmin(True)
    fhew_key = cc.EvalSchemeSwitchingSetup(sw)
    lwe = cc.GetBinCCForSchemeSwitch()
    cc.EvalSchemeSwitchingKeyGen(keys, fhew_key)
    p_lwe = int((1 << 25) / (2 * lwe.GetBeta()))
    # Inputs lie in [0, 1/2]: scale so that one quantization step of the sum is >= 1 in FHEW.
    cc.EvalCompareSwitchPrecompute(p_lwe, 512.0)
    keygen_s = time.perf_counter() - t1
    hots, run_s = [], []
    for row in values:
        padded = np.full(width, -1.0)  # padding below every score never wins
        padded[:k] = row
        ct = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext([float(v) for v in padded]))
        t2 = time.perf_counter()
        result = cc.EvalMaxSchemeSwitching(ct, keys.publicKey, width, width)
        run_s.append(time.perf_counter() - t2)
        pt = cc.Decrypt(keys.secretKey, result[1])
        pt.SetLength(width)
        hots.append(np.asarray(pt.GetRealPackedValue()[:k], np.float64))
    return {
        "one_hot": np.stack(hots),
        "setup_s": time.perf_counter() - t0 - float(np.sum(run_s)),
        "keygen_s": keygen_s,
        "encrypt_s": 0.0,
        "run_s": float(np.median(run_s)),
        "depth": depth,
        "ring_dim": int(cc.GetRingDimension()),
        "run_s_per_input": float(np.mean(run_s)),
        "inputs_per_ciphertext": 1,
        "signs": 0,
        "client_refreshes": 0,
    }


def run_ckks_argmax(
    sums: np.ndarray, *, variant: str, security: str = "128", levels: int | None = None
) -> dict[str, Any]:
    """Encrypted argmax of integer (or real) sums [n, k] under CKKS; the client's decoding.

    Args:
      sums: non-negative summed scores [n, k] (e.g. the quantized soft vote).
      variant: one of :data:`CKKS_VARIANTS`.
      security: ``"128"`` (OpenFHE's 128-bit classic parameters) or ``"none"`` (small ring, for
        tests only: not secure).
      levels: the largest possible sum (scaling); default ``sums.max()``.

    Returns:
      ``{"argmax": [n], "reference": [n], "exact", "error_rate", "min_gap", "min_gap_error",
      "run_s", "keygen_s", "depth", "ring_dim", ...}``.
    """
    sums = np.asarray(sums, np.float64)
    if sums.ndim != 2 or sums.shape[1] < 2:
        raise ValueError(f"sums must have shape [n, k >= 2], got {sums.shape}")
    if variant not in CKKS_VARIANTS:
        raise ValueError(f"variant must be one of {CKKS_VARIANTS}, got {variant!r}")
    if security not in ("128", "none"):
        raise ValueError(f"security must be '128' or 'none', got {security!r}")
    top = float(levels if levels is not None else max(sums.max(), 1.0))
    scaled = sums / (2.0 * top)  # into [0, 1/2]: differences stay in [-1/2, 1/2]
    if variant == "scheme_switching":
        out = _scheme_switching_argmax(scaled, security)
    else:
        out = _polynomial_argmax(scaled, variant, security)
    hot = out.pop("one_hot")
    above = hot > 0.5
    got = np.where(above.any(axis=1), above.argmax(axis=1), -1)
    reference = np.argmax(sums, axis=1)
    wrong = got != reference
    srt = np.sort(sums, axis=1)
    gap = srt[:, -1] - srt[:, -2]
    out.update(
        argmax=got.tolist(),
        reference=reference.tolist(),
        exact=bool(not wrong.any()),
        error_rate=float(wrong.mean()),
        min_gap_error=float(gap[wrong].min()) if wrong.any() else None,
        max_gap_error=float(gap[wrong].max()) if wrong.any() else None,
        variant=variant,
        k=int(sums.shape[1]),
        n=int(sums.shape[0]),
        security=security,
        max_abs_one_hot_error=float(np.abs(hot - (sums == srt[:, -1:]).astype(float)).max()),
    )
    return out


@entry_point("ckks_argmax")
def _ckks_entry(arrays: dict[str, np.ndarray], kwargs: dict[str, Any]):
    return {}, run_ckks_argmax(arrays["sums"], **kwargs)
