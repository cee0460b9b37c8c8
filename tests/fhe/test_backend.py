"""The FHE backend: an end-to-end Concrete circuit (fhe env) and the no-Concrete path (both
envs)."""

import subprocess
import sys

import numpy as np
import pytest

from jaxtrust import fhe


@pytest.mark.fhe
def test_encrypted_4way_max_of_4bit_values_matches_numpy(tmp_path_factory):
    key_cache = tmp_path_factory.getbasetemp().parent / "concrete-keys"
    rng = np.random.default_rng(1)
    # Ties and the extremes are where a comparison circuit goes wrong first.
    cases = [rng.integers(0, 16, size=4), np.array([15, 0, 15, 3]), np.array([0, 0, 0, 0])]
    for values in cases:
        result, timings = fhe.encrypted_max_smoke(values, bits=4, key_cache_dir=key_cache)
        assert result == int(values.max()), (values, result)
        assert set(timings) == {"compile", "keygen", "encrypt", "run", "decrypt"}


@pytest.mark.fhe
@pytest.mark.parametrize(
    "values, bits, err",
    [
        (np.array([1]), 4, ValueError),
        (np.array([1, 16]), 4, ValueError),
        (np.array([1.0, 2.0]), 4, TypeError),
        (np.array([1, 2]), 9, ValueError),
    ],
)
def test_encrypted_max_rejects_bad_input(values, bits, err):
    with pytest.raises(err):
        fhe.encrypted_max_smoke(values, bits=bits)


@pytest.mark.smoke
def test_import_jaxtrust_without_concrete_explains_the_extra():
    # A fresh interpreter in which `concrete` cannot be imported: jaxtrust still imports and the
    # FHE entry point says how to install the extra.
    code = (
        "import sys; sys.modules['concrete'] = None; sys.modules['concrete.fhe'] = None\n"
        "import jaxtrust, jaxtrust.fhe as f\n"
        "try:\n    f.require_concrete()\nexcept f.ConcreteUnavailableError as e:\n    print('ERR', "
        "e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ERR" in out.stdout and "jaxtrust[fhe]" in out.stdout
