"""Beyond one machine: two processes on loopback (``jax.distributed`` with CPU collectives) run
the sharded train step and match the single-process run; the orbax checkpoint both processes
wrote restores in one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtrust.training import Checkpointer, abstract_like, init_train_state, make_train_step

from ._resume_worker import MLP, mse_loss, regression_batch

WORKER = Path(__file__).with_name("_multiprocess_worker.py")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process():
    tx = optax.adamw(3e-2, weight_decay=1e-2)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, mse_loss, tx)
    losses = []
    for i in range(5):
        state, metrics = step(state, regression_batch(i))
        losses.append(float(metrics["loss"]))
    return state, losses


def test_two_processes_match_one_and_their_checkpoint_restores_in_one(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), "2", str(port), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    reference, ref_losses = _single_process()
    losses = json.loads((tmp_path / "losses.json").read_text())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    saved = np.load(tmp_path / "params.npz")
    for i, leaf in enumerate(jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(saved[f"arr_{i}"], np.asarray(leaf), rtol=1e-5, atol=1e-6)
    # the checkpoint written by both processes restores in this one
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        restored = ckpt.restore(target=abstract_like(reference))
    assert int(restored.step) == 5
    for a, b in zip(
        jax.tree.leaves(restored.params), jax.tree.leaves(reference.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
