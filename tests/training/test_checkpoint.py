"""Checkpointer / save_pytree round trips, retention, errors, and kill-and-resume training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtrust.training import (
    Checkpointer,
    fit,
    load_pytree,
    save_pytree,
)

from ._resume_worker import MLP, build_lm_job, lm_batch, regression_batch, run_lm_job

WORKER = os.path.join(os.path.dirname(__file__), "_resume_worker.py")


def _leaves_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _trained_state(steps: int = 2):
    graphdef, state, step = build_lm_job()
    for i in range(steps):
        state, _ = step(state, lm_batch(i))
    return graphdef, state


@pytest.mark.smoke
def test_train_state_round_trip_exact_with_abstract_target(tmp_path):
    _, state = _trained_state()
    ckpt = Checkpointer(tmp_path / "ckpt")
    assert ckpt.save(2, state, metadata={"run": "a"})
    ckpt.wait()
    assert ckpt.latest_step() == 2
    abstract = jax.eval_shape(lambda: state)
    restored = ckpt.restore(target=abstract)
    _leaves_equal(restored, state)  # incl. typed RNG key of the dropout stream and int32 step
    assert isinstance(restored.params, nnx.State)
    assert ckpt.metadata()["run"] == "a"
    ckpt.close()


def test_restored_state_continues_identically(tmp_path):
    graphdef, state, step = build_lm_job()
    state, _ = step(state, lm_batch(0))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        ckpt.wait()
        restored = ckpt.restore(1, target=jax.eval_shape(lambda: state))
    a, _ = step(state, lm_batch(1))
    b, _ = step(restored, lm_batch(1))
    _leaves_equal(a, b)


def test_retention_and_save_interval(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros((3,), jnp.bfloat16)}
    with Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
        assert not ckpt.save(1, tree)  # off the interval grid
        for step in (2, 4, 6):
            assert ckpt.save(step, jax.tree.map(lambda x, s=step: x + s, tree))
        assert ckpt.save(7, tree, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [6, 7]
        restored = ckpt.restore(6, target=tree)
        assert restored["b"].dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(tree["w"]) + 6)
        with pytest.raises(FileNotFoundError, match="step 4"):
            ckpt.restore(4, target=tree)


def test_clear_errors(tmp_path):
    with Checkpointer(tmp_path / "empty") as empty:
        assert empty.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            empty.restore(target={"w": jnp.zeros(2)})
    with Checkpointer(tmp_path / "c") as ckpt:
        ckpt.save(0, {"layer": {"kernel": jnp.zeros((2, 3))}})
        ckpt.wait()
        with pytest.raises(ValueError, match=r"layer/kernel.*\(2, 3\).*\(3, 3\)"):
            ckpt.restore(target={"layer": {"kernel": jnp.zeros((3, 3))}})
        with pytest.raises(ValueError, match="missing from the checkpoint"):
            ckpt.restore(target={"layer": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}})
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path / "x", max_to_keep=0)


def test_partial_save_is_invisible(tmp_path):
    """A crash mid-save leaves only an orbax temporary directory, which is never restored."""
    tree = {"w": jnp.ones((4,))}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, tree)
    # What a process killed while writing step 2 leaves behind: an uncommitted tmp dir.
    partial = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        np.testing.assert_array_equal(np.asarray(ckpt.restore(target=tree)["w"]), np.ones(4))


def test_save_and_load_pytree(tmp_path):
    model = MLP(rngs=nnx.Rngs(3))
    params = nnx.state(model, nnx.Param)
    save_pytree(tmp_path / "params", params, metadata={"kind": "mlp"})
    loaded = load_pytree(tmp_path / "params", jax.eval_shape(lambda: params))
    _leaves_equal(loaded, params)
    fresh = MLP(rngs=nnx.Rngs(4))
    nnx.update(fresh, loaded)
    batch = regression_batch(0)
    np.testing.assert_array_equal(np.asarray(fresh(batch["x"])), np.asarray(model(batch["x"])))
    with pytest.raises(FileExistsError):
        save_pytree(tmp_path / "params", params)
    with pytest.raises(FileNotFoundError):
        load_pytree(tmp_path / "nothing", params)
    with pytest.raises(ValueError, match="shape"):
        load_pytree(tmp_path / "params", nnx.state(MLP(din=4, rngs=nnx.Rngs(0)), nnx.Param))


def test_fit_history_eval_and_in_process_resume(tmp_path):
    graphdef, state, step = build_lm_job()
    evals = []

    def eval_fn(graphdef, state):
        evals.append(int(state.step))
        return {"step_seen": float(state.step)}

    with Checkpointer(tmp_path, max_to_keep=5) as ckpt:
        state, history = fit(
            graphdef,
            state,
            step,
            lm_batch,
            num_steps=6,
            checkpointer=ckpt,
            checkpoint_every=4,
            eval_fn=eval_fn,
            eval_every=3,
            progress=True,
        )
        assert ckpt.all_steps() == [4, 6]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert evals == [3, 6] and history[2]["eval_step_seen"] == 3.0
    assert history[-1]["loss"] < history[0]["loss"]
    # A second call with a larger budget continues from checkpoint 6, not from scratch.
    graphdef, fresh, step = build_lm_job()
    with Checkpointer(tmp_path) as ckpt:
        resumed, more = fit(
            graphdef,
            fresh,
            step,
            lm_batch,
            num_steps=8,
            checkpointer=ckpt,
            checkpoint_every=4,
            progress=False,
        )
    # the history covers the whole run: steps 1-6 restored from the checkpoint, 7-8 run now
    assert [h["step"] for h in more] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [h["loss"] for h in more[:6]] == [h["loss"] for h in history]
    assert int(resumed.step) == 8


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    num_steps, every, kill_at = 20, 4, 10
    ckpt_dir = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, WORKER, str(ckpt_dir), str(num_steps), str(every), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    printed = [
        int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("step ")
    ]
    assert printed[-1] == kill_at  # killed mid-run, not at the end
    with Checkpointer(ckpt_dir) as ckpt:
        interrupted_at = ckpt.latest_step()
    assert interrupted_at is not None and 0 < interrupted_at < num_steps

    logged: list[int] = []
    resumed, resumed_history = run_lm_job(ckpt_dir, num_steps, every, logged=logged)
    assert logged[0] == interrupted_at + 1  # really resumed, not restarted
    assert [h["step"] for h in resumed_history] == list(range(1, num_steps + 1))
    reference, reference_history = run_lm_job(None, num_steps, every)
    assert int(resumed.step) == int(reference.step) == num_steps
    for a, b in zip(
        jax.tree.leaves(resumed.params), jax.tree.leaves(reference.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    # the whole history, the part restored from the checkpoint included
    np.testing.assert_allclose(
        [h["loss"] for h in resumed_history],
        [h["loss"] for h in reference_history],
        rtol=0,
        atol=1e-6,
    )
    # The run did learn something (the comparison is not between two untrained models).
    assert reference_history[-1]["loss"] < 0.7 * reference_history[0]["loss"]
