"""The suite really enforces the jaxtyping annotations (see ``tests/conftest.py``)."""

import importlib.util

import jax.numpy as jnp
import jaxtyping
import pytest

from jaxtrust.training import dpo_loss


@pytest.mark.skipif(
    importlib.util.find_spec("beartype") is None, reason="runtime checks need beartype (dev extra)"
)
def test_annotation_mismatch_is_caught_at_call_time():
    z = jnp.zeros(3)
    with pytest.raises(jaxtyping.TypeCheckError, match="ref_rejected_logps"):
        dpo_loss(z, z, z, jnp.zeros(2))  # "batch" bound to 3, then given 2


@pytest.mark.usefixtures("own_error_messages")
def test_fixture_lets_the_library_message_through():
    z = jnp.zeros(3)
    with pytest.raises(ValueError, match="ref_rejected_logps must have shape"):
        dpo_loss(z, z, z, jnp.zeros(2))
