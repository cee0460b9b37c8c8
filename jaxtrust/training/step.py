"""Functional train / eval steps for any Flax NNX module.

The model is split once into a static ``graphdef`` and a :class:`TrainState` pytree of arrays;
the jitted step merges them back (``nnx.merge``) inside ``jax.jit``, differentiates the user's
``loss_fn(model, batch, rng) -> (loss, aux)`` with respect to the parameters only, optionally
accumulates gradients over micro-batches and runs the forward in a lower precision, then
applies an optax transformation. Everything that changes lives in the state, so the step is a
pure function that can be checkpointed, resumed and sharded.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from flax import nnx
  >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  >>> def loss_fn(model, batch, rng):
  ...     err = model(batch["x"]) - batch["y"]
  ...     return jnp.mean(err**2), {}
  >>> tx = optax.adam(1e-2)
  >>> graphdef, state = init_train_state(model, tx)
  >>> step = make_train_step(graphdef, loss_fn, tx)
  >>> batch = {"x": jnp.ones((4, 2)), "y": jnp.zeros((4, 1))}
  >>> state, metrics = step(state, batch)
  >>> int(state.step), sorted(metrics)
  (1, ['grad_norm', 'loss'])

The same loss works with the stateful ``nnx.Optimizer`` API (flax >= 0.11)::

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer, batch, rng):
        grad_fn = nnx.value_and_grad(lambda m: loss_fn(m, batch, rng), has_aux=True)
        (loss, aux), grads = grad_fn(model)
        optimizer.update(model, grads)
        return loss

``nnx.Optimizer`` initialises ``tx`` on a State of ``Param`` nodes but updates it with raw
arrays; transforms that need parameter-shaped masks must therefore take callables. The
functional :class:`TrainState` path uses the same structure for ``init`` and ``update``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import PyTree

__all__ = [
    "TrainState",
    "init_train_state",
    "merge_model",
    "make_train_step",
    "make_eval_step",
    "evaluate",
    "find_learning_rate",
]

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
MetricFn = Callable[[nnx.Module, Any], Mapping[str, jax.Array]]


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree of arrays.

    Attributes:
      params: ``nnx.State`` of the trainable variables (the ``wrt`` filter).
      rest: ``nnx.State`` of every other variable (batch statistics, RNG streams, ...).
      opt_state: the optax state of ``tx.init(params)``.
      step: int32 scalar, number of optimizer updates applied.
      rng: raw ``uint32[2]`` PRNG key, split once per step and handed to ``loss_fn``.
    """

    params: PyTree
    rest: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array


def init_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    *,
    wrt: Any = nnx.Param,
    seed: int = 0,
) -> tuple[nnx.GraphDef, TrainState]:
    """Split ``model`` into a static graph and a :class:`TrainState`.

    Args:
      model: any Flax NNX module.
      tx: the optax transformation, initialised on the trainable params.
      wrt: NNX filter selecting the trainable variables (default ``nnx.Param``).
      seed: seed of the per-step PRNG key passed to ``loss_fn``.

    Returns:
      ``(graphdef, state)``; rebuild the module with :func:`merge_model`.

    The state shares its arrays with ``model`` (no copy). A train step built with
    ``donate=True`` frees them, so after the first step use ``merge_model(graphdef, state)``
    rather than ``model``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, wrt, ...)
    if not jax.tree.leaves(params):
        raise ValueError(f"model has no variables matching wrt={wrt!r}; nothing to train")
    opt_state = tx.init(params)
    state = TrainState(
        params=params,
        rest=rest,
        opt_state=opt_state,
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.PRNGKey(seed),
    )
    return graphdef, state


def merge_model(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """Rebuild the NNX module from ``graphdef`` and a :class:`TrainState`."""
    return nnx.merge(graphdef, state.params, state.rest)


def _cast_floating(tree: PyTree, dtype: Any) -> PyTree:
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
        tree,
    )


def _restore_dtypes(tree: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(
        lambda x, ref: x.astype(ref.dtype) if x.dtype != ref.dtype else x, tree, like
    )


def _global_norm(tree: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def find_learning_rate(opt_state: PyTree) -> jax.Array | None:
    """Return the learning rate stored by ``optax.inject_hyperparams`` in ``opt_state``, if any."""
    stack = [opt_state]
    while stack:
        node = stack.pop()
        hyperparams = getattr(node, "hyperparams", None)
        if isinstance(hyperparams, Mapping) and "learning_rate" in hyperparams:
            return jnp.asarray(hyperparams["learning_rate"])
        if isinstance(node, tuple | list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            stack.extend(node.values())
    return None


def _split_micro_batches(batch: PyTree, accum_steps: int) -> PyTree:
    """``[B, ...] -> [accum_steps, B / accum_steps, ...]``, micro-batch ``i`` = rows ``i::accum``.

    Strided rather than contiguous so that a batch sharded over 'data' keeps every device's
    rows local: each micro-batch takes an equal share of each device's shard.
    """

    def split(path, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % accum_steps:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has shape {x.shape}; its leading "
                f"(batch) dimension must be divisible by accum_steps={accum_steps}"
            )
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.moveaxis(x, 1, 0)

    return jax.tree_util.tree_map_with_path(split, batch)


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    compute_dtype: Any = None,
    donate: bool = True,
    extra_args_fn: Callable[[TrainState, Any], Mapping[str, Any]] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str | tuple[str, ...] = "data",
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    r"""Build the jitted ``step(state, batch) -> (state, metrics)``.

    Inside the step: ``model = nnx.merge(graphdef, params, rest)``; ``loss_fn(model, batch, rng)``
    is differentiated w.r.t. ``params`` only. With ``accum_steps = k`` the batch's leading axis is
    split into ``k`` equal micro-batches (rows ``i::k``), scanned with ``lax.scan``, and

    .. math:: g = \frac1k \sum_{i=1}^{k} \nabla_\theta \mathcal{L}(\theta; B_i),

    which equals the gradient of the full batch's mean loss when every micro-batch carries
    the same number of target tokens. With ``compute_dtype`` (e.g. ``jnp.bfloat16``) floating
    params are cast for the forward only; params, gradients and the optimizer stay float32.
    Then ``updates, opt_state = tx.update(grads, opt_state, params, **extra_args_fn(state,
    batch))`` and ``params = optax.apply_updates(params, updates)``. Non-param variables the
    forward mutates (RNG counters, batch statistics) are carried into the new ``rest``.

    Args:
      graphdef: from :func:`init_train_state`.
      loss_fn: ``loss_fn(model, batch, rng) -> (scalar loss, dict of scalar aux metrics)``.
      tx: the optax transformation (``GradientTransformationExtraArgs`` for extra args).
      accum_steps: number of gradient-accumulation micro-batches (>= 1).
      compute_dtype: dtype of the forward pass; ``None`` keeps the params' dtype.
      donate: donate the input state's buffers to the output (saves memory; the passed-in state
        must not be used afterwards).
      extra_args_fn: ``(state, batch) -> dict`` of keyword arguments for ``tx.update`` (e.g.
        ``{"safety_grads": ...}``), evaluated inside the jitted step.
      mesh: optional device mesh. The batch is laid out as ``P(batch_axis)`` on its leading
        axis and the state keeps the shardings it arrives with (see
        :func:`jaxtrust.training.sharding.shard_params`); outputs keep the same shardings.
      batch_axis: mesh axis (or axes) the batch's leading dimension is split over.

    Returns:
      ``step(state, batch) -> (new_state, metrics)`` with metrics ``loss``, ``grad_norm``
      (global L2 norm of the averaged gradient), ``learning_rate`` when the optimizer was built
      with ``optax.inject_hyperparams``, and the mean of ``loss_fn``'s aux metrics.
    """
    if not isinstance(accum_steps, int) or accum_steps < 1:
        raise ValueError(f"accum_steps must be a positive int, got {accum_steps!r}")

    def forward(params, rest, batch, rng):
        compute_params = params if compute_dtype is None else _cast_floating(params, compute_dtype)
        # Fresh Variable nodes at this trace level: NNX refuses to mutate (RNG counters, batch
        # stats) variables created outside the current transform.
        rest_nodes = jax.tree.map(lambda x: x, rest)
        model = nnx.merge(graphdef, compute_params, rest_nodes)
        out = loss_fn(model, batch, rng)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise TypeError("loss_fn must return (loss, aux_metrics_dict)")
        loss, aux = out
        loss = jnp.asarray(loss)
        if loss.shape != ():
            raise ValueError(f"loss_fn must return a scalar loss, got shape {loss.shape}")
        _, _, new_rest = nnx.split(model, _params_filter(params), ...)
        new_rest = _restore_dtypes(new_rest, rest)
        aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}
        return loss.astype(jnp.float32), (aux, new_rest)

    grad_fn = jax.value_and_grad(forward, has_aux=True)

    def compute_grads(state: TrainState, batch, rng):
        if accum_steps == 1:
            (loss, (aux, rest)), grads = grad_fn(state.params, state.rest, batch, rng)
            return loss, aux, rest, grads
        micro = _split_micro_batches(batch, accum_steps)
        rngs = jax.random.split(rng, accum_steps)
        zeros = jax.tree.map(jnp.zeros_like, state.params)

        def body(carry, xs):
            grads_sum, loss_sum, rest = carry
            micro_batch, micro_rng = xs
            (loss, (aux, rest)), grads = grad_fn(state.params, rest, micro_batch, micro_rng)
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            return (grads_sum, loss_sum + loss, rest), aux

        (grads_sum, loss_sum, rest), auxs = jax.lax.scan(
            body, (zeros, jnp.zeros((), jnp.float32), state.rest), (micro, rngs)
        )
        grads = jax.tree.map(lambda g: g / accum_steps, grads_sum)
        aux = jax.tree.map(lambda a: jnp.mean(a, axis=0), auxs)
        return loss_sum / accum_steps, aux, rest, grads

    def step(state: TrainState, batch):
        rng, step_rng = jax.random.split(state.rng)
        loss, aux, rest, grads = compute_grads(state, batch, step_rng)
        grads = _restore_dtypes(grads, state.params)
        extra = dict(extra_args_fn(state, batch)) if extra_args_fn is not None else {}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)
        params = _restore_dtypes(params, state.params)
        metrics = {"loss": loss, "grad_norm": _global_norm(grads)}
        learning_rate = find_learning_rate(opt_state)
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate.astype(jnp.float32)
        for key, value in aux.items():
            metrics.setdefault(key, value)
        new_state = TrainState(params, rest, opt_state, state.step + 1, rng)
        return new_state, metrics

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    return _ShardedStep(step, mesh, batch_axis, donate_argnums)


def _params_filter(params: PyTree) -> Callable[[tuple, Any], bool]:
    """NNX filter selecting exactly the variable paths present in ``params``.

    Re-splitting the merged model must reproduce the (params, rest) partition of the state,
    whatever ``wrt`` filter built it (a type, a path filter for LoRA/frozen layers, ...), so the
    partition is read off the params' own paths.
    """
    paths = {tuple(path) for path, _ in nnx.to_flat_state(params)}
    return lambda path, _: tuple(path) in paths


class _ShardedStep:
    """A jitted step whose in/out shardings are taken from the first state it sees."""

    def __init__(self, step_fn, mesh, batch_axis, donate_argnums):
        self._step_fn = step_fn
        self._mesh = mesh
        self._batch_axis = batch_axis
        self._donate_argnums = donate_argnums
        self._compiled: dict[Any, Callable] = {}

    def __call__(self, state: TrainState, batch):
        from jax.sharding import NamedSharding, PartitionSpec

        treedef = jax.tree.structure(state)
        fn = self._compiled.get(treedef)
        if fn is None:
            replicated = NamedSharding(self._mesh, PartitionSpec())

            def sharding_of(x):
                sharding = getattr(x, "sharding", None)
                if isinstance(sharding, NamedSharding) and sharding.mesh.shape == self._mesh.shape:
                    return sharding
                return replicated

            state_shardings = jax.tree.map(sharding_of, state)
            batch_sharding = NamedSharding(self._mesh, PartitionSpec(self._batch_axis))
            fn = jax.jit(
                self._step_fn,
                in_shardings=(state_shardings, batch_sharding),
                out_shardings=(state_shardings, replicated),
                donate_argnums=self._donate_argnums,
            )
            self._compiled[treedef] = fn
        return fn(state, batch)


def make_eval_step(
    graphdef: nnx.GraphDef, metric_fn: MetricFn
) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """Jitted ``eval_step(state, batch) -> metrics`` on the model in eval mode.

    Args:
      graphdef: from :func:`init_train_state`.
      metric_fn: ``metric_fn(model, batch) -> dict`` of scalar metrics; an entry ``num_tokens``
        (or ``num_examples``) is used as the weight of this batch by :func:`evaluate`.
    """

    @jax.jit
    def eval_step(state: TrainState, batch):
        model = nnx.merge(graphdef, state.params, state.rest)
        model.eval()
        metrics = metric_fn(model, batch)
        return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return eval_step


def evaluate(
    graphdef: nnx.GraphDef,
    state: TrainState,
    batches: Iterable[Any],
    metric_fn: MetricFn,
    *,
    eval_step: Callable[[TrainState, Any], dict[str, jax.Array]] | None = None,
) -> dict[str, float]:
    r"""Token-weighted means of ``metric_fn`` over ``batches``.

    .. math:: \bar m = \sum_j w_j m_j / \sum_j w_j,

    with :math:`w_j` the batch's ``num_tokens`` (else ``num_examples``, else 1); the returned
    ``num_tokens`` is the total weight.

    Args:
      graphdef: from :func:`init_train_state`.
      state: the :class:`TrainState` to evaluate.
      batches: iterable of batches.
      metric_fn: ``metric_fn(model, batch) -> dict``.
      eval_step: a prebuilt :func:`make_eval_step` (avoids re-tracing across calls).
    """
    if eval_step is None:
        eval_step = make_eval_step(graphdef, metric_fn)
    sums: dict[str, float] = {}
    total_weight = 0.0
    for batch in batches:
        metrics = jax.device_get(eval_step(state, batch))
        weight_key = next((k for k in ("num_tokens", "num_examples") if k in metrics), None)
        weight = float(metrics[weight_key]) if weight_key else 1.0
        total_weight += weight
        for key, value in metrics.items():
            if key == weight_key:
                continue
            sums[key] = sums.get(key, 0.0) + float(np.asarray(value)) * weight
    if total_weight == 0:
        raise ValueError("evaluate got no batches (or only batches with zero weight)")
    result = {k: v / total_weight for k, v in sums.items()}
    result["num_tokens"] = total_weight
    return result
