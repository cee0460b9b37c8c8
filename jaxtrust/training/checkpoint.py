"""Atomic, resumable checkpoints of any pytree (``TrainState`` with ``nnx.State`` inside).

One small wrapper over ``orbax.checkpoint.CheckpointManager`` so that switching to the orbax
V1 API later touches one file. Every checkpoint is an orbax ``Composite`` of

* ``state``: the pytree's arrays as a nested dict of plain names (NNX Variable nodes,
  NamedTuples and typed PRNG keys are flattened to arrays; keys are stored as their raw data),
  saved with ``StandardSave``;
* ``metadata``: JSON with the user's metadata and, per leaf, its path, shape and dtype.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoint intact and the partial one invisible.
Restoring rebuilds exactly the target's pytree structure and dtypes (the target's treedef is
used; only the arrays come from disk) and checks paths/shapes first, raising a ``ValueError``
that names the mismatching leaves instead of returning a half-loaded state.

Example:
  >>> import tempfile
  >>> ckpt = Checkpointer(tempfile.mkdtemp())
  >>> tree = {"w": jnp.ones((2, 3)), "step": jnp.int32(7)}
  >>> ckpt.save(7, tree, metadata={"note": "hi"})
  True
  >>> ckpt.wait(); ckpt.latest_step()
  7
  >>> restored = ckpt.restore(target=tree)
  >>> int(restored["step"]), ckpt.metadata()["note"]
  (7, 'hi')
  >>> ckpt.close()
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jaxtyping import PyTree

from jaxtrust.training.sharding import _component_name, path_to_str

__all__ = ["Checkpointer", "abstract_like", "save_pytree", "load_pytree"]


def abstract_like(tree: PyTree) -> PyTree:
    """``jax.ShapeDtypeStruct`` leaves with the shapes, dtypes *and shardings* of ``tree``.

    Use it as a restore target: unlike ``jax.eval_shape``, it keeps each array's sharding, so a
    sharded state is restored directly into its layout.
    """

    def leaf(x):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, jax.sharding.Sharding):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(np.shape(x), np.result_type(x))

    return jax.tree.map(leaf, tree)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: PyTree) -> tuple[list[tuple[Any, ...]], list[Any], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [p for p, _ in leaves_with_path]
    leaves = [x for _, x in leaves_with_path]
    return paths, leaves, treedef


def _nest(paths: list[tuple[Any, ...]], values: list[Any]) -> dict:
    """Nested dict ``{name: {name: leaf}}`` from key paths (orbax-friendly plain containers)."""
    root: dict = {}
    for path, value in zip(paths, values, strict=True):
        names = [_component_name(k) for k in path] or ["leaf"]
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"checkpoint path collision at {path_to_str(path)!r}")
        if names[-1] in node:
            raise ValueError(f"checkpoint path collision at {path_to_str(path)!r}")
        node[names[-1]] = value
    return root


def _unnest(root: dict, paths: list[tuple[Any, ...]]) -> list[Any]:
    out = []
    for path in paths:
        node = root
        for name in [_component_name(k) for k in path] or ["leaf"]:
            node = node[name]
        out.append(node)
    return out


def _to_storable(x: Any) -> Any:
    if isinstance(x, jax.Array) and _is_key(x):
        return jax.random.key_data(x)
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    return x


def _leaf_record(path, x) -> dict:
    record = {"path": path_to_str(path, drop_value=False)}
    if _is_key(x):
        data_shape = jax.eval_shape(jax.random.key_data, x).shape
        impl = str(jax.random.key_impl(x)) if isinstance(x, jax.Array) else None
        record.update(shape=list(data_shape), dtype="uint32", prng_key=True, impl=impl)
    else:
        record.update(shape=list(np.shape(x)), dtype=str(jnp.dtype(x.dtype)))
    return record


def _abstract_leaf(x: Any) -> jax.ShapeDtypeStruct:
    """Restore target for one leaf, with a sharding so orbax places it (no warning)."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    if _is_key(x):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _check_compatible(saved: list[dict], paths, target_leaves, where: str) -> None:
    expected = [_leaf_record(p, x) for p, x in zip(paths, target_leaves, strict=True)]
    saved_by_path = {r["path"]: r for r in saved}
    problems = []
    expected_paths = {r["path"] for r in expected}
    for record in expected:
        got = saved_by_path.get(record["path"])
        if got is None:
            problems.append(f"{record['path']}: missing from the checkpoint")
        elif list(got["shape"]) != list(record["shape"]):
            problems.append(
                f"{record['path']}: checkpoint shape {tuple(got['shape'])} != target shape "
                f"{tuple(record['shape'])}"
            )
    extra = [r["path"] for r in saved if r["path"] not in expected_paths]
    if extra:
        problems.append(f"checkpoint has leaves the target lacks: {extra[:5]}")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"checkpoint {where} does not match the restore target:\n  {shown}{more}")


def _rebuild(restored_nested: dict, paths, target_leaves, treedef) -> PyTree:
    values = _unnest(restored_nested, paths)
    out = []
    for value, like in zip(values, target_leaves, strict=True):
        if _is_key(like):
            # The key dtype carries its PRNG implementation; ``name`` is what wrap_key_data takes.
            impl = like.dtype._impl.name
            value = jax.random.wrap_key_data(value, impl=impl)
        elif value.dtype != like.dtype:
            value = value.astype(like.dtype)
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def _prepare_save(tree: PyTree, metadata: dict | None) -> ocp.args.Composite:
    paths, leaves, _ = _flatten(tree)
    if not leaves:
        raise ValueError("cannot checkpoint a pytree without array leaves")
    records = [_leaf_record(p, x) for p, x in zip(paths, leaves, strict=True)]
    nested = _nest(paths, [_to_storable(x) for x in leaves])
    meta = {"user": metadata or {}, "leaves": records}
    return ocp.args.Composite(state=ocp.args.StandardSave(nested), metadata=ocp.args.JsonSave(meta))


def _restore_args(target: PyTree) -> tuple[ocp.args.Composite, list, list, Any]:
    paths, leaves, treedef = _flatten(target)
    if not leaves:
        raise ValueError("restore target has no array leaves")
    abstract = _nest(paths, [_abstract_leaf(x) for x in leaves])
    return ocp.args.Composite(state=ocp.args.StandardRestore(abstract)), paths, leaves, treedef


class Checkpointer:
    """Keeps the last ``max_to_keep`` training checkpoints under ``directory``.

    Args:
      directory: root directory (created if missing); one sub-directory per step.
      max_to_keep: number of most recent checkpoints kept on disk.
      save_interval_steps: ``save`` is a no-op unless ``step`` is a multiple of this (or
        ``force=True``).
      async_save: write in a background thread (the device-to-host copy happens before
        ``save`` returns, so the saved state may be donated/overwritten right after).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
        self.save_interval_steps = int(save_interval_steps)
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "metadata")
        )

    def save(
        self, step: int, state: PyTree, metadata: dict | None = None, force: bool = False
    ) -> bool:
        """Save ``state`` as checkpoint ``step``; returns whether a save was started.

        Args:
          step: the training step (non-negative int) naming the checkpoint.
          state: any pytree of arrays.
          metadata: JSON-serialisable dict stored next to the arrays.
          force: save even if ``step`` is off the ``save_interval_steps`` grid.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        # The interval is applied here: orbax's own policy always saves the first step it sees.
        if not force and step % self.save_interval_steps:
            return False
        return bool(self._manager.save(step, args=_prepare_save(state, metadata), force=force))

    def latest_step(self) -> int | None:
        """The newest committed checkpoint's step, or ``None`` when there is none.

        Non-blocking: a save still being written in the background is not counted until orbax
        has renamed its temporary directory into place.
        """
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """Steps of all committed checkpoints on disk, ascending."""
        # Read the directory rather than the manager's bookkeeping, which lists a step as soon
        # as its (asynchronous) save starts. Committed steps are plain ``<step>`` directories;
        # in-flight ones are ``<step>.orbax-checkpoint-tmp-*``.
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(
            int(name)
            for name in names
            if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
        )

    def _resolve_step(self, step: int | None) -> int:
        self._manager.wait_until_finished()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        elif int(step) not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})"
            )
        return int(step)

    def metadata(self, step: int | None = None) -> dict:
        """The user metadata saved with checkpoint ``step`` (default: latest)."""
        return self._read_meta(self._resolve_step(step))["user"]

    def _read_meta(self, step: int) -> dict:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        )
        return dict(restored["metadata"])

    def restore(self, step: int | None = None, *, target: PyTree) -> PyTree:
        """Load checkpoint ``step`` (default: latest) into the structure of ``target``.

        Args:
          step: which checkpoint; ``None`` for the latest.
          target: a pytree with the expected structure; its leaves may be arrays or
            ``jax.ShapeDtypeStruct`` (:func:`abstract_like` of the state, or
            ``jax.eval_shape``). The target leaves' shardings are reused for the restored
            arrays (leaves without one go to the first device).

        Returns:
          a pytree with ``target``'s treedef and leaf dtypes.

        Raises:
          FileNotFoundError: no (such) checkpoint in the directory.
          ValueError: the checkpoint's leaf paths or shapes differ from the target's.
        """
        step = self._resolve_step(step)
        args, paths, leaves, treedef = _restore_args(target)
        meta = self._read_meta(step)
        _check_compatible(meta["leaves"], paths, leaves, f"step {step} in {self.directory}")
        restored = self._manager.restore(step, args=args)
        return _rebuild(restored["state"], paths, leaves, treedef)

    def wait(self) -> None:
        """Block until pending asynchronous saves are written and committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release the manager's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_pytree(path: str | os.PathLike, tree: PyTree, *, metadata: dict | None = None) -> None:
    """Write ``tree`` to the new directory ``path`` (atomically; synchronous).

    Raises:
      FileExistsError: ``path`` already exists.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise FileExistsError(f"save_pytree: {path} already exists")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=_prepare_save(tree, metadata))


def load_pytree(path: str | os.PathLike, target: PyTree) -> PyTree:
    """Read a :func:`save_pytree` directory into the structure/dtypes of ``target``.

    Raises:
      FileNotFoundError: ``path`` is not a checkpoint written by :func:`save_pytree`.
      ValueError: leaf paths or shapes differ from ``target``'s.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.join(path, "state")):
        raise FileNotFoundError(f"load_pytree: no checkpoint written by save_pytree at {path}")
    args, paths, leaves, treedef = _restore_args(target)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        meta = checkpointer.restore(path, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))[
            "metadata"
        ]
        _check_compatible(meta["leaves"], paths, leaves, path)
        restored = checkpointer.restore(path, args=args)
    return _rebuild(restored["state"], paths, leaves, treedef)
