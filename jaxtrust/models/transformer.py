"""One causal-LM implementation for the Llama family and GPT-NeoX (Flax NNX).

Parameter paths (``/``-joined; regex masks over them select layers or matrix kinds)::

    embed/embedding                     [vocab, dim]
    layers/attn_norm/{scale,bias}       [layers, dim]            (bias: LayerNorm only)
    layers/attn/{q,k,v}_proj/kernel     [layers, dim, heads*head_dim]   (+ bias [layers, out])
    layers/attn/o_proj/kernel           [layers, heads*head_dim, dim]
    layers/attn/{q,k}_norm/scale        [layers, head_dim]       (Qwen3 only)
    layers/mlp_norm/{scale,bias}        [layers, dim]
    layers/mlp/gate_proj/kernel         [layers, dim, ffn]       (Llama family only)
    layers/mlp/up_proj/kernel           [layers, dim, ffn]
    layers/mlp/down_proj/kernel         [layers, ffn, dim]
    final_norm/{scale,bias}             [dim]
    lm_head/kernel                      [dim, vocab]             (absent when tied)

Layers are stacked along a leading axis and run with ``lax.scan``; per-layer tensors (KV cache,
head and FFN masks) are scanned along with them.
"""

# ruff: noqa: F722
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxtrust.models.cache import KVCache
from jaxtrust.models.config import LMConfig
from jaxtrust.models.hooks import ModelHooks, expand_to
from jaxtrust.models.layers import Linear, Norm, apply_rope, rope_inv_freq


class LMOutput(NamedTuple):
    """What :meth:`CausalLM.__call__` returns.

    Attributes:
      logits: next-token logits ``[batch, seq, vocab]``.
      cache: the updated :class:`KVCache` when one was passed, else None.
      hidden_states: the residual stream after the embedding and after every layer
        ``[layers + 1, batch, seq, dim]`` when requested, else None.
    """

    logits: Float[Array, "batch seq vocab"]
    cache: KVCache | None
    hidden_states: Float[Array, "layers_plus_1 batch seq dim"] | None


class Attention(nnx.Module):
    def __init__(
        self, config: LMConfig, *, stack: tuple[int, ...], rngs: nnx.Rngs, dtype, param_dtype
    ):
        d, h, kv, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        kw = dict(stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Linear(d, h * hd, bias=config.qkv_bias, **kw)
        self.k_proj = Linear(d, kv * hd, bias=config.qkv_bias, **kw)
        self.v_proj = Linear(d, kv * hd, bias=config.qkv_bias, **kw)
        self.o_proj = Linear(
            h * hd, d, bias=config.o_bias, std=0.02 / math.sqrt(2 * config.num_layers), **kw
        )
        if config.qk_norm:
            self.q_norm = Norm(hd, layer_norm=False, stack=stack, param_dtype=param_dtype)
            self.k_norm = Norm(hd, layer_norm=False, stack=stack, param_dtype=param_dtype)
        else:
            self.q_norm = self.k_norm = None


class MLP(nnx.Module):
    def __init__(
        self, config: LMConfig, *, stack: tuple[int, ...], rngs: nnx.Rngs, dtype, param_dtype
    ):
        d, f = config.hidden_size, config.intermediate_size
        kw = dict(
            bias=config.mlp_bias, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.gate_proj = Linear(d, f, **kw) if config.arch == "llama" else None
        self.up_proj = Linear(d, f, **kw)
        self.down_proj = Linear(f, d, std=0.02 / math.sqrt(2 * config.num_layers), **kw)


class Block(nnx.Module):
    """A decoder block; built stacked (``stack=(layers,)``) and sliced per layer under scan."""

    def __init__(
        self, config: LMConfig, *, stack: tuple[int, ...], rngs: nnx.Rngs, dtype, param_dtype
    ):
        layer_norm = config.arch == "gpt_neox"
        self.attn_norm = Norm(
            config.hidden_size, layer_norm=layer_norm, stack=stack, param_dtype=param_dtype
        )
        self.attn = Attention(config, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.mlp_norm = Norm(
            config.hidden_size, layer_norm=layer_norm, stack=stack, param_dtype=param_dtype
        )
        self.mlp = MLP(config, stack=stack, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


def _norm(hooks: ModelHooks, norm: Norm, x, layer, kind: str, eps: float):
    return hooks.norm(
        x, norm.scale[...], None if norm.bias is None else norm.bias[...], layer, kind, eps
    )


def _attention(
    block: Block,
    h,
    layer,
    *,
    config: LMConfig,
    hooks: ModelHooks,
    positions,
    mask,
    inv_freq,
    cache_k,
    cache_v,
    head_mask,
    index,
    dtype,
):
    b, s, _ = h.shape
    nh, kv, hd = config.num_heads, config.num_kv_heads, config.head_dim
    attn = block.attn
    q = attn.q_proj(h).reshape(b, s, nh, hd)
    k = attn.k_proj(h).reshape(b, s, kv, hd)
    v = attn.v_proj(h).reshape(b, s, kv, hd)
    if attn.q_norm is not None:
        q = _norm(hooks, attn.q_norm, q, layer, "q_norm", config.norm_eps)
        k = _norm(hooks, attn.k_norm, k, layer, "k_norm", config.norm_eps)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    if cache_k is not None:
        # The whole [layers, ...] cache is a scan carry, updated in place at (layer, index):
        # scanning it as xs/ys would copy every layer's cache on every decoding step.
        zero = jnp.zeros((), jnp.int32)
        start = (layer.astype(jnp.int32), zero, index.astype(jnp.int32), zero, zero)
        cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype)[None], start)
        cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype)[None], start)
        k = jax.lax.dynamic_index_in_dim(cache_k, layer, axis=0, keepdims=False).astype(dtype)
        v = jax.lax.dynamic_index_in_dim(cache_v, layer, axis=0, keepdims=False).astype(dtype)
    # Query heads are grouped [kv_heads, group] (head h uses kv head h // group), so K/V are
    # never materialised per query head.
    group = nh // kv
    qg = q.reshape(b, s, kv, group, hd)
    scores = jnp.einsum("bskgd,btkd->bkgst", qg, k, preferred_element_type=jnp.float32) / math.sqrt(
        hd
    )
    probs = hooks.softmax(scores, mask[:, None, None, :, :], layer)
    out = jnp.einsum("bkgst,btkd->bskgd", probs.astype(dtype), v)
    if head_mask is not None:
        out = out * head_mask.reshape(kv, group)[None, None, :, :, None].astype(out.dtype)
    out = attn.o_proj(hooks.attn_context(out.reshape(b, s, nh * hd), layer))
    return hooks.attn_output(out, layer), cache_k, cache_v


def _mlp(block: Block, h, layer, *, config: LMConfig, hooks: ModelHooks, ffn_mask):
    mlp = block.mlp
    if mlp.gate_proj is not None:
        gate = hooks.mlp_gate(mlp.gate_proj(h), layer)
        up = hooks.mlp_up(mlp.up_proj(h), layer)
        hidden = hooks.activation(gate, layer) * up
    else:
        hidden = hooks.activation(hooks.mlp_up(mlp.up_proj(h), layer), layer)
    if ffn_mask is not None:
        hidden = hidden * expand_to(ffn_mask.astype(hidden.dtype), hidden.ndim)
    return mlp.down_proj(hooks.mlp_hidden(hidden, layer))


class CausalLM(nnx.Module):
    """Decoder-only language model (Llama family and GPT-NeoX), see the module docstring.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 5), jnp.int32)).logits.shape
      (2, 5, 256)
    """

    def __init__(
        self, config: LMConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32
    ):
        self.config = config
        self.dtype = dtype
        self.embed = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = Block(
            config, stack=(config.num_layers,), rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.final_norm = Norm(
            config.hidden_size, layer_norm=config.arch == "gpt_neox", param_dtype=param_dtype
        )
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(
                config.hidden_size,
                config.vocab_size,
                bias=False,
                rngs=rngs,
                dtype=dtype,
                param_dtype=param_dtype,
            )
        )

    def _check_inputs(
        self, tokens, positions, attention_mask, cache, head_mask, ffn_mask, inputs_embeds=None
    ):
        c = self.config
        if inputs_embeds is not None:
            if tokens is not None:
                raise ValueError("pass either tokens or inputs_embeds, not both")
            if (
                not hasattr(inputs_embeds, "ndim")
                or inputs_embeds.ndim != 3
                or inputs_embeds.shape[-1] != c.hidden_size
            ):
                raise ValueError(
                    f"inputs_embeds must be a [batch, seq, {c.hidden_size}] float array, got "
                    f"shape {getattr(inputs_embeds, 'shape', type(inputs_embeds))}"
                )
            if not jnp.issubdtype(inputs_embeds.dtype, jnp.floating):
                raise TypeError(f"inputs_embeds must be floating, got {inputs_embeds.dtype}")
            shape2 = tuple(inputs_embeds.shape[:2])
        else:
            if not hasattr(tokens, "ndim") or tokens.ndim != 2:
                raise ValueError(
                    "tokens must be a [batch, seq] integer array, got shape "
                    f"{getattr(tokens, 'shape', type(tokens))}"
                )
            if not jnp.issubdtype(tokens.dtype, jnp.integer):
                raise TypeError(f"tokens must have an integer dtype, got {tokens.dtype}")
            shape2 = tuple(tokens.shape)
        for name, value, shape in (
            ("attention_mask", attention_mask, shape2),
            ("positions", positions, shape2),
            ("head_mask", head_mask, (c.num_layers, c.num_heads)),
            ("ffn_mask", ffn_mask, (c.num_layers, c.intermediate_size)),
        ):
            if value is not None and tuple(value.shape) != tuple(shape):
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
        if cache is not None:
            if cache.k.shape[:2] != (c.num_layers, shape2[0]) or cache.k.shape[3:] != (
                c.num_kv_heads,
                c.head_dim,
            ):
                raise ValueError(
                    f"cache has k of shape {cache.k.shape}, expected ({c.num_layers}, {shape2[0]}, "
                    f"slots, {c.num_kv_heads}, {c.head_dim})"
                )
            if shape2[1] > cache.max_len:
                raise ValueError(f"{shape2[1]} tokens do not fit a cache of {cache.max_len} slots")
            # Past the last slot, dynamic_update_slice would clamp the write and silently overwrite
            # earlier keys. The index is only known outside jit; inside, the caller sizes the cache.
            if (
                not isinstance(cache.index, jax.core.Tracer)
                and int(cache.index) + shape2[1] > cache.max_len
            ):
                raise ValueError(
                    f"cache: {shape2[1]} new tokens at slot {int(cache.index)} do not fit a cache "
                    f"of {cache.max_len} slots (cache.index + seq must be <= max_len)"
                )

    def __call__(
        self,
        tokens: Int[ArrayLike, "batch seq"] | None = None,
        *,
        inputs_embeds: Float[ArrayLike, "batch seq dim"] | None = None,
        prefix_mask: Bool[ArrayLike, "batch seq"] | None = None,
        positions: Int[ArrayLike, "batch seq"] | None = None,
        attention_mask: Bool[ArrayLike, "batch seq"] | None = None,
        cache: KVCache | None = None,
        head_mask: Float[ArrayLike, "layers heads"] | None = None,
        ffn_mask: Float[ArrayLike, "layers ffn"] | None = None,
        hooks: ModelHooks | None = None,
        output_hidden_states: bool = False,
        last_logits_only: bool = False,
    ) -> LMOutput:
        """Logits for every position (and the updated cache, and hidden states on request).

        Args:
          tokens: token ids (or ``None`` with ``inputs_embeds``).
          inputs_embeds: ``[batch, seq, hidden]`` input embeddings used instead of
            ``embed(tokens)`` (soft prompts, image tokens of a vision-language model).
          prefix_mask: True on the positions of a bidirectional prefix (the prefix-LM of
            PaliGemma): prefix queries also attend to *later* valid prefix keys of this call;
            all other attention stays causal. With a cache, only prefix keys written by this
            call count as prefix.
          positions: RoPE positions; default counts real tokens (``cumsum(mask) - 1``), plus the
            valid slots already in ``cache``, so left padding needs no special handling.
          attention_mask: True on real tokens; default all True.
          cache: a :class:`KVCache`; the new keys/values are written at slots
            ``[cache.index, cache.index + seq)`` and every token attends to the valid slots up to
            its own.
          head_mask: per-layer, per-head multipliers of the attention output (before ``o_proj``).
          ffn_mask: per-layer multipliers of the FFN hidden units (input of the down projection).
          hooks: a :class:`ModelHooks` replacing functions inside the forward pass.
          output_hidden_states: also return the embeddings and each block's output.
          last_logits_only: compute logits for the last position only (``[batch, 1, vocab]``):
            a prefill needs no more, and the vocabulary projection of every prompt token is a
            large share of its cost.

        Returns:
          :class:`LMOutput` with fp32 logits.
        """
        self._check_inputs(
            tokens, positions, attention_mask, cache, head_mask, ffn_mask, inputs_embeds
        )
        c = self.config
        dtype = self.dtype
        b, s = (tokens if inputs_embeds is None else inputs_embeds).shape[:2]
        if prefix_mask is not None and tuple(jnp.shape(prefix_mask)) != (b, s):
            raise ValueError(
                f"prefix_mask must have shape {(b, s)}, got {tuple(jnp.shape(prefix_mask))}"
            )
        hooks = hooks or ModelHooks(activation_name=c.activation)
        if hooks.activation_name != c.activation:
            hooks = dataclasses.replace(hooks, activation_name=c.activation)
        mask = jnp.ones((b, s), bool) if attention_mask is None else attention_mask.astype(bool)
        if positions is None:
            past = (
                jnp.zeros((b,), jnp.int32)
                if cache is None
                else jnp.sum(cache.valid, axis=1, dtype=jnp.int32)
            )
            positions = jnp.maximum(
                past[:, None] + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0
            )
        inv_freq = rope_inv_freq(c)

        if cache is None:
            index = jnp.zeros((), jnp.int32)
            q_slot = jnp.arange(s)
            k_slot = jnp.arange(s)
            key_valid = mask
        else:
            index = cache.index
            key_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
            q_slot = index + jnp.arange(s)
            k_slot = jnp.arange(cache.max_len)
        allowed = k_slot[None, :] <= q_slot[:, None]
        if c.sliding_window is not None:
            allowed = allowed & (q_slot[:, None] - k_slot[None, :] < c.sliding_window)
        attn_mask = key_valid[:, None, :] & allowed[None, :, :]  # [b, s, keys]
        if prefix_mask is not None:
            prefix = jnp.asarray(prefix_mask).astype(bool)
            key_prefix = (
                prefix
                if cache is None
                else jax.lax.dynamic_update_slice(jnp.zeros_like(cache.valid), prefix, (0, index))
            )
            attn_mask = attn_mask | (
                prefix[:, :, None] & key_prefix[:, None, :] & key_valid[:, None, :]
            )

        if inputs_embeds is None:
            x = self.embed(tokens).astype(dtype)
        else:
            x = jnp.asarray(inputs_embeds).astype(dtype)
        graphdef, layer_state = nnx.split(self.layers)
        xs = dict(
            state=layer_state,
            layer=jnp.arange(c.num_layers, dtype=jnp.int32),
            head_mask=head_mask,
            ffn_mask=ffn_mask,
        )

        def body(carry, xs):
            x, cache_k, cache_v = carry
            block = nnx.merge(graphdef, xs["state"])
            layer = xs["layer"]
            h = _norm(hooks, block.attn_norm, x, layer, "attn_norm", c.norm_eps)
            a, new_k, new_v = _attention(
                block,
                h,
                layer,
                config=c,
                hooks=hooks,
                positions=positions,
                mask=attn_mask,
                inv_freq=inv_freq,
                cache_k=cache_k,
                cache_v=cache_v,
                head_mask=xs["head_mask"],
                index=index,
                dtype=dtype,
            )
            if c.parallel_residual:
                m = _mlp(
                    block,
                    _norm(hooks, block.mlp_norm, x, layer, "mlp_norm", c.norm_eps),
                    layer,
                    config=c,
                    hooks=hooks,
                    ffn_mask=xs["ffn_mask"],
                )
                out = x + a + m
            else:
                h2 = x + a
                m = _mlp(
                    block,
                    _norm(hooks, block.mlp_norm, h2, layer, "mlp_norm", c.norm_eps),
                    layer,
                    config=c,
                    hooks=hooks,
                    ffn_mask=xs["ffn_mask"],
                )
                out = h2 + m
            out = hooks.residual(out, layer).astype(dtype)
            return (out, new_k, new_v), (out if output_hidden_states else None)

        init = (x, None if cache is None else cache.k, None if cache is None else cache.v)
        (final, new_k, new_v), per_layer = jax.lax.scan(body, init, xs)
        hidden_states = (
            jnp.concatenate([x[None], per_layer], axis=0) if output_hidden_states else None
        )
        if last_logits_only:
            final = final[:, -1:]
        y = _norm(hooks, self.final_norm, final, c.num_layers, "final_norm", c.norm_eps)
        if self.lm_head is None:
            embedding = self.embed.embedding[...].astype(dtype)
            rows = y.reshape(-1, y.shape[-1])  # 2-D matmul: see Linear
            logits = jnp.matmul(rows, embedding.T, preferred_element_type=jnp.float32).reshape(
                *y.shape[:-1], -1
            )
        else:
            logits = self.lm_head(y)
        new_cache = None if cache is None else KVCache(new_k, new_v, key_valid, index + s)
        return LMOutput(logits.astype(jnp.float32), new_cache, hidden_states)
