"""SecPE's CKKS argmax: the composite sign polynomial in plaintext (every env), and the encrypted
tournament, sequential and scheme-switching argmax against numpy's argmax, delegated to
.venv-ckks (skipped where no OpenFHE environment exists)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrust import fhe
from jaxtrust.fhe import ckks
from jaxtrust.fhe.delegation import call


@pytest.mark.smoke
def test_composite_sign_is_odd_and_within_its_resolution():
    x = np.linspace(-1, 1, 2001)
    s = ckks.composite_sign(x)
    np.testing.assert_allclose(s, -ckks.composite_sign(-x), atol=1e-12)
    # Outside a small band around 0 the composite g4 o g4 o f4 o f4 is the sign to 1e-3
    # (Cheon et al. 2020 give about 2^-10 precision for |x| >= 2^-5 at these degrees).
    far = np.abs(x) >= 2**-5
    assert np.max(np.abs(s[far] - np.sign(x[far]))) < 2e-3
    assert np.max(np.abs(s)) <= 1.0 + 1e-3
    # The max step built on it is exact far from ties and the mean on ties.
    a, b = 0.4, 0.1
    m = (a + b) / 2 + (a - b) / 2 * ckks.composite_sign(np.array([a - b]))[0]
    assert abs(m - a) < 1e-3


def _ckks_reachable() -> bool:
    status = fhe.environment_status("ckks")
    return bool(status["in_process"] or status["delegation"])


@pytest.mark.slow
@pytest.mark.skipif(not _ckks_reachable(), reason="no .venv-ckks with openfhe (make setup-ckks)")
@pytest.mark.parametrize("variant", ["tournament", "sequential", "scheme_switching"])
def test_ckks_argmax_equals_numpy_with_ties(variant):
    rng = np.random.default_rng(3)
    sums = rng.integers(0, 16, size=(8, 4)).astype(np.float64)
    sums[0] = 7  # all tied: class 0
    sums[1] = [2, 15, 3, 15]  # tie at the top between 1 and 3: class 1
    sums[2] = [14, 15, 0, 0]  # a one-step gap
    _, out = call(
        "ckks_argmax", {"sums": sums}, {"variant": variant, "security": "none", "levels": 15}
    )
    np.testing.assert_array_equal(out["argmax"], np.argmax(sums, axis=1))
    assert out["exact"] and out["error_rate"] == 0.0 and out["depth"] > 0
    if variant == "tournament":
        assert out["signs"] == 3  # log2(4) max steps + the one-hot sign
    elif variant == "sequential":
        assert out["signs"] == 4  # k - 1 max steps + the one-hot sign


@pytest.mark.smoke
def test_ckks_argmax_rejects_bad_input(own_error_messages):
    with pytest.raises(ValueError, match="variant"):
        ckks.run_ckks_argmax(np.zeros((2, 4)), variant="bitonic")
    with pytest.raises(ValueError, match="k >= 2"):
        ckks.run_ckks_argmax(np.zeros((2, 1)), variant="tournament")
    with pytest.raises(ValueError, match="security"):
        ckks.run_ckks_argmax(np.zeros((2, 4)), variant="tournament", security="64")
