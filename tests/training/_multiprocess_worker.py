"""One process of the multi-process run (``test_multiprocess.py``): JAX's own runtime
(``jax.distributed.initialize``) on loopback with CPU collectives, the sharded train step of
``_resume_worker`` over a mesh spanning both processes, an orbax checkpoint written by both.

Usage: python _multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from jaxtrust.training import (  # noqa: E402
    Checkpointer,
    init_train_state,
    make_mesh,
    make_train_step,
    shard_batch,
    shard_params,
)
from tests.training._resume_worker import MLP, mse_loss, regression_batch  # noqa: E402


def main() -> None:
    assert jax.process_count() == num_processes and len(jax.devices()) == 2 * num_processes
    tx = optax.adamw(3e-2, weight_decay=1e-2)
    graphdef, state = init_train_state(MLP(rngs=nnx.Rngs(0)), tx)
    mesh = make_mesh(data=len(jax.devices()))
    state = shard_params(state, mesh)
    step = make_train_step(graphdef, mse_loss, tx, mesh=mesh)
    losses = []
    for i in range(5):
        # every process passes the same global batch; each device keeps its shard
        state, metrics = step(state, shard_batch(regression_batch(i), mesh))
        losses.append(float(metrics["loss"]))
    with Checkpointer(os.path.join(out, "ckpt")) as ckpt:
        ckpt.save(5, state, force=True)
        ckpt.wait()
    params = [np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True))
              for x in jax.tree.leaves(state.params)]  # fmt: skip
    if process_id == 0:
        np.savez(os.path.join(out, "params.npz"), *params)
        with open(os.path.join(out, "losses.json"), "w") as f:
            json.dump(losses, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    import jax.experimental.multihost_utils  # noqa: F401

    main()
