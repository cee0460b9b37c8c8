"""Data and model parallelism with ``jax.jit`` + ``NamedSharding`` (no pmap).

A 2-D mesh with axes ``('data', 'model')``: batches are split over ``'data'`` on their leading
axis; parameters (and the optimizer state that mirrors them) are replicated by default or laid
out by regex rules over their paths, e.g. ``[(r"kernel$", P(None, "model"))]`` for tensor
parallel output dims, or ``[(r"kernel$", P("data", None))]`` for FSDP-style sharding. The jitted
train step (``make_train_step(..., mesh=mesh)``) keeps these shardings on its outputs and GSPMD
inserts the collectives, so the numbers match a single device up to reduction order.

Example:
  >>> import jax.numpy as jnp
  >>> mesh = make_mesh(data=1, model=1)
  >>> batch = shard_batch({"x": jnp.ones((4, 3))}, mesh)
  >>> batch["x"].sharding.spec == PartitionSpec("data")
  True
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

__all__ = ["make_mesh", "shard_batch", "shard_params", "path_to_str", "tree_paths", "fsdp_rules"]

Rules = Sequence[tuple[str, PartitionSpec]]


def _component_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_to_str(path: Sequence[Any], *, drop_value: bool = True) -> str:
    """``'/'``-joined names of a ``jax.tree_util`` key path.

    The trailing ``.value`` of NNX Variable nodes is dropped by default, so a kernel reads
    ``"params/l1/kernel"``.
    """
    names = [_component_name(k) for k in path]
    if (
        drop_value
        and names
        and names[-1] == "value"
        and isinstance(path[-1], jax.tree_util.GetAttrKey)
    ):
        names = names[:-1]
    return "/".join(names)


def tree_paths(tree: PyTree) -> list[str]:
    """The :func:`path_to_str` of every leaf of ``tree``, in leaf order."""
    return [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def make_mesh(
    data: int | None = None, model: int = 1, *, devices: Sequence[Any] | None = None
) -> Mesh:
    """A ``(data, model)`` device mesh with axis names ``('data', 'model')``.

    Axes are created with ``AxisType.Auto`` (GSPMD propagation), the behaviour this module is
    written for; jax >= 0.10 would otherwise default ``jax.make_mesh`` to explicit axes.

    Args:
      data: size of the data-parallel axis; ``None`` uses ``len(devices) // model``.
      model: size of the model-parallel axis.
      devices: devices to use (default ``jax.devices()``).

    Returns:
      a ``jax.sharding.Mesh`` of shape ``(data, model)``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1:
        raise ValueError(f"model must be >= 1, got {model}")
    if data is None:
        data = len(devices) // model
    if data < 1 or data * model > len(devices):
        raise ValueError(
            f"mesh data={data} x model={model} needs {data * model} devices, "
            f"{len(devices)} available"
        )
    devices = devices[: data * model]
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is not None and "axis_types" in inspect.signature(jax.make_mesh).parameters:
        return jax.make_mesh(
            (data, model), ("data", "model"), axis_types=(axis_type.Auto,) * 2, devices=devices
        )
    return Mesh(np.array(devices).reshape(data, model), ("data", "model"))


def shard_batch(batch: PyTree, mesh: Mesh, axis: str | tuple[str, ...] = "data") -> PyTree:
    """Place every leaf of ``batch`` with its leading axis split over mesh axis ``axis``.

    Raises:
      ValueError: a leaf is a scalar or its leading dimension is not divisible by the axis size.
    """
    axes = (axis,) if isinstance(axis, str) else tuple(axis)
    size = int(np.prod([mesh.shape[a] for a in axes]))
    sharding = NamedSharding(mesh, PartitionSpec(axis))

    def place(path, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % size:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has shape {x.shape}; its leading "
                f"dimension must be divisible by the {axis!r} mesh size {size}"
            )
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map_with_path(place, batch)


def _spec_fits(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> str | None:
    if len(spec) > len(shape):
        return f"spec {spec} has {len(spec)} entries for a {len(shape)}-D array"
    for dim, axes in zip(shape, spec, strict=False):
        if axes is None:
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        for name in names:
            if name not in mesh.shape:
                return f"mesh has no axis {name!r} (axes: {tuple(mesh.shape)})"
        size = int(np.prod([mesh.shape[n] for n in names]))
        if dim % size:
            return f"dimension {dim} is not divisible by mesh axes {names} of size {size}"
    return None


def shard_params(state: PyTree, mesh: Mesh, rules: Rules | None = None) -> PyTree:
    """Place a pytree of parameters (or a whole ``TrainState``) on ``mesh``.

    Each leaf's path (:func:`path_to_str`, e.g. ``"opt_state/0/mu/l1/kernel"``) is matched
    with ``re.search`` against the rules in order; the first match gives its
    ``PartitionSpec``. Unmatched leaves, scalars and leaves listed with ``None`` are replicated.
    Because the optimizer moments share the parameter paths' suffixes, a rule such as
    ``r"kernel$"`` shards the parameter and its Adam moments the same way.

    Args:
      state: any pytree of arrays.
      mesh: the device mesh.
      rules: sequence of ``(regex, PartitionSpec)``.

    Returns:
      the same pytree with every array placed by ``jax.device_put``.

    Raises:
      ValueError: a matched spec does not fit the leaf (rank, divisibility, unknown axis); the
        message names the path.
    """
    compiled = [(re.compile(pattern), spec) for pattern, spec in (rules or ())]
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(path, x):
        name = path_to_str(path)
        x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
        spec = None
        if x.ndim > 0:
            for pattern, candidate in compiled:
                if pattern.search(name):
                    spec = candidate
                    break
        if spec is None:
            return jax.device_put(x, replicated)
        problem = _spec_fits(spec, x.shape, mesh)
        if problem:
            raise ValueError(
                f"sharding rule for {name!r} (shape {x.shape}) does not fit: {problem}"
            )
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(place, state)


def fsdp_rules(axis: str = "data") -> list[tuple[str, PartitionSpec]]:
    """Rules sharding the first dimension of every ``kernel``/``embedding`` over ``axis``.

    A starting point for FSDP-style memory savings (parameters and Adam moments split over the
    data axis; GSPMD all-gathers them for the forward). Every such leaf's first dimension must
    be divisible by the axis size.
    """
    return [(r"(kernel|embedding)$", PartitionSpec(axis))]
