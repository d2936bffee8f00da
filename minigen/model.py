"""GPT-2 in plain TensorFlow ops: embeddings, pre-LN blocks, attention over the static KV cache, tied LM head.

One forward function serves every phase, told by one value how to use the cache (cache.View,
built by each strategy). It reads `s` new tokens whose first one sits at cache slot `view.index`,
writes their keys and values into the cache at slots `index .. index+s-1`, and lets each query
attend to the cache slots at or before its own that hold real tokens:

- prefill: the whole (left-padded) prompt, `index = 0`;
- decode step: one token per row, `index` = the slot after the last one written;
- verify block (speculative decoding): `s` drafted tokens at once, each row at its own slot
  (`index` is then a [batch] vector: rows accept different numbers of tokens);
- beam search's step (`view.lineage`) and contrastive search's candidates (`view.alternatives`);
- texts packed side by side in one row (`view.packed`: scoring), each reading only its own keys.

Nothing here branches in Python on a tensor's value, so every phase compiles under
`tf.function(jit_compile=True)`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from . import cache as kv
from . import precision
from .config import GPT2Config
from .layout import BLOCK_TENSORS, SCALE_SUFFIX, quantized, tensor_shapes
from .positions import positions_from_mask

MASKED = float(np.finfo(np.float32).min)  # score given to a key a query may not attend to


class Block(NamedTuple):
    """One transformer block's weights. Kernels are held [out, in] (see `linear`); the file stores them [in, out]."""

    ln_1_scale: tf.Variable  # [d]
    ln_1_bias: tf.Variable  # [d]
    qkv_kernel: precision.Matrix  # [3d, d]: q | k | v, each head-major
    qkv_bias: tf.Variable  # [3d]
    out_kernel: precision.Matrix  # [d, d]
    out_bias: tf.Variable  # [d]
    ln_2_scale: tf.Variable  # [d]
    ln_2_bias: tf.Variable  # [d]
    up_kernel: precision.Matrix  # [inner, d]
    up_bias: tf.Variable  # [inner]
    down_kernel: precision.Matrix  # [d, inner]
    down_bias: tf.Variable  # [d]


def random_params(config: GPT2Config, seed: int = 0, std: float = 0.02, scale_residual: bool = True):
    """Freshly initialised weights in minigen's names and file layout ([in, out] kernels):
    N(0, std) matrices (GPT-2 scales the residual output projections by 1/sqrt(2 * n_layer) when
    scale_residual), layer-norm scales 1, biases 0."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in tensor_shapes(config).items():
        if name.endswith(".scale"):
            params[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        else:
            residual = scale_residual and name.endswith(("attn.out.kernel", "mlp.down.kernel"))
            scale = std / math.sqrt(2 * config.n_layer) if residual else std
            params[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return params


# ---- small pure functions ----------------------------------------------------------------------


def attention_mask(view: kv.View, s: int) -> tf.Tensor:
    """Which cache slots each of `s` queries (at slots index..index+s-1) may attend to.

    view.key_mask: [batch, cache_len] bool, True where a slot holds a real token (after this write).
    view.index: scalar int32 (every row writes at the same slot), or [batch] int32 (speculative
        decoding: rows accept different numbers of tokens, so each has its own length).
    view.lineage: None, or for beam search [prompts, beams, cache_len] int32: which beam row of its
        prompt's group holds each slot's key/value for each beam (see `Transformer.attention`).
    view.alternatives: contrastive search's candidates (each sees the history and itself).
    view.packed: None, or [batch, cache_len] int32: the text each slot holds; a query attends only to
        slots of its own text (a Python int index: the whole row at once).
    Returns [batch, 1, s, cache_len] bool (broadcast over heads); with a lineage,
    [prompts, 1, beams * s, beams * cache_len]: query (beam q, token i) -> key (beam row p, slot t).
    """
    key_mask, lineage, alternatives = view.key_mask, view.lineage, view.alternatives
    cache_len = key_mask.shape[1]
    index = tf.cast(view.index, tf.int32)
    if index.shape.rank == 0:
        query_slots = index + tf.range(s)  # [s]
        slots = tf.range(cache_len)[None, :]
        if alternatives:
            causal = (slots < index) | (slots == query_slots[:, None])  # [s, cache_len]
        else:
            causal = slots <= query_slots[:, None]  # [s, cache_len]
        mask = causal[None, None, :, :] & key_mask[:, None, None, :]  # [batch, 1, s, cache_len]
        if view.packed is not None:
            queries = view.packed[:, view.index:view.index + s]  # [batch, s]
            mask &= (queries[:, None, :, None] == view.packed[:, None, None, :])
    else:  # one start slot per row (speculative decoding)
        query_slots = index[:, None] + tf.range(s)[None, :]  # [batch, s]
        causal = tf.range(cache_len)[None, None, :] <= query_slots[:, :, None]  # [batch, s, cache_len]
        mask = (causal & key_mask[:, None, :])[:, None]  # [batch, 1, s, cache_len]
    if lineage is None:
        return mask
    prompts, beams = tf.shape(lineage)[0], lineage.shape[1]
    mask = tf.reshape(mask, [prompts, beams, s, 1, cache_len])
    holder = lineage[:, :, None, None, :] == tf.range(beams)[None, None, None, :, None]  # [prompts, q, 1, p, t]
    return tf.reshape(mask & holder, [prompts, 1, beams * s, beams * cache_len])


# Prefill attends in chunks of this many queries, each to the slots up to its own last one: the keys
# after a chunk (later prompt tokens, the empty generation slots) are never scored. GPT-2 small shape,
# 1000-token prompt: time to first token 0.626 -> 0.533 s (2-core AMD EPYC; chunks of 64 and 256 gave
# 0.530 and 0.549 s).
CHUNK = 128


def causal_chunks(q, k_cache, v_cache, mask, index: int, scale: float, heads: int):
    """Attention of a prompt's queries q [batch * heads, s, head_dim] (slots index .. index+s-1), CHUNK
    at a time over the cache slots before each chunk's end. mask: [batch, 1, s, cache_len].
    Returns [batch * heads, s, head_dim]."""
    s = q.shape[1]
    out = []
    for start in range(0, s, CHUNK):
        stop = min(start + CHUNK, s)
        keys = index + stop  # slots a query of this chunk may see
        scores = tf.matmul(q[:, start:stop], tf.cast(k_cache[:, :keys], q.dtype), transpose_b=True) * scale
        scores = tf.where(mask[:, :, start:stop, :keys], tf.reshape(scores, [-1, heads, stop - start, keys]), MASKED)
        probs = tf.reshape(tf.nn.softmax(scores, axis=-1), [-1, stop - start, keys])
        out.append(tf.matmul(probs, tf.cast(v_cache[:, :keys], q.dtype)))  # [batch * heads, stop - start, head_dim]
    return tf.concat(out, axis=1)


def layer_norm(x, scale, bias, eps):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps) * scale + bias


def activation(name: str):
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        c = math.sqrt(2.0 / math.pi)
        return lambda x: 0.5 * x * (1.0 + tf.tanh(c * (x + 0.044715 * x * x * x)))
    if name == "gelu":
        return lambda x: 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
    if name == "quick_gelu":
        return lambda x: x * tf.sigmoid(1.702 * x)
    if name == "relu":
        return tf.nn.relu
    if name in ("silu", "swish"):
        return tf.nn.silu
    raise ValueError(f"activation_function {name!r} is not implemented")


# Tokens per row from which `linear` multiplies as x @ W^T: probe of GPT-2 small's 48 block matmuls
# (ms, XLA, 2-core AMD EPYC), (W @ x^T)^T vs x @ W^T: 32 rows 18.9 vs 28.7, 128 rows 56.8 vs 60.7,
# 256 rows 116.0 vs 109.1, 1008 rows 417.5 vs 357.0 (a 1000-token prompt's prefill: time to first token
# 0.667 -> 0.626 s, GPT-2 small shape).
PLAIN_FROM = 192


def linear(x, kernel: precision.Matrix, bias):
    """x [..., in] @ kernel^T + bias, with kernel held [out, in] (in its compute dtype: precision.py).

    For a few tokens per row (decode steps, verify blocks, short prompts) computed as (kernel @ x^T)^T:
    XLA's CPU dot streams a weight matrix fastest as the left operand with the few token rows on the
    right. Matmul-only probes of GPT-2 small's 48 block matmuls per step (benchmarks/probe_matmul.py):
    15.1 -> 12.7 ms at 1 row, 30.1 -> 17.5 ms at 8 rows, against the plain x @ [in, out] kernel.
    The optimization barrier keeps XLA from fusing the bias add (and transpose) into the dot, which
    on CPU leaves the fast kernel (20.5 vs 16.0 ms for the 48 matmuls when this was measured).
    From PLAIN_FROM tokens per row (long prompts) the plain x @ kernel^T is faster. The choice
    depends on the static tokens per row only, never on the batch size, so a prompt gives the
    same numbers alone as in a batch.
    """
    lead = tf.shape(x)[:-1]
    flat = tf.reshape(x, [-1, x.shape[-1]])  # [tokens, in]
    plain = x.shape.rank >= 2 and x.shape[-2] is not None and x.shape[-2] >= PLAIN_FROM
    y = precision.matmul(flat, kernel, weight_left=not plain) + tf.cast(bias, x.dtype)  # [tokens, out]
    return tf.reshape(y, tf.concat([lead, [kernel.values.shape[0]]], 0))


# ---- the model ---------------------------------------------------------------------------------


class Transformer:
    """The GPT-2 network: weights in TensorFlow variables and the phases the decoding loops call
    (`prefill`, `decode_one_token`, `forward`, `lm_head`). Nothing here knows about generation:
    the object users hold, `minigen.GPT2` (gpt2.py), wraps one of these.
    """

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray], dtype="float32"):
        """params: minigen's tensors by name (the file layout); an int8 file's matrices come with
        their scales under name + SCALE_SUFFIX. dtype: one of precision.DTYPES."""
        self.config = config
        self.dtype = dtype
        self.weight_dtype = tf.as_dtype(dtype)

        def mat(name, transpose=False):  # a matrix a dot reads: [out, in]
            value, scale = params[name], params.get(name + SCALE_SUFFIX)
            if transpose:
                value = np.ascontiguousarray(value.T)
            return precision.matrix(value, dtype, name, scale)

        def var(name):
            # wpe (only gathered) takes the storage dtype, int8 models keep it float32; vectors (layer
            # norms, biases) stay float32: they are tiny.
            dtype = tf.float32 if params[name].ndim == 1 or self.dtype == "int8" else self.weight_dtype
            value = np.asarray(params[name], np.float32) if params[name].dtype != dtype.as_numpy_dtype else params[name]
            return tf.Variable(value, dtype=dtype, trainable=False, name=name.replace(".", "/"))

        self.wte = mat("wte")  # [vocab, d]
        self.wpe = var("wpe")  # [n_positions, d]
        self.blocks = [
            # kernels: [in, out] in the file -> [out, in] here, for `linear`
            Block(**{field: mat(f"h.{i}.{name}", True) if quantized(name) else var(f"h.{i}.{name}")
                     for field, name in BLOCK_TENSORS.items()})
            for i in range(config.n_layer)
        ]
        self.ln_f_scale = var("ln_f.scale")
        self.ln_f_bias = var("ln_f.bias")
        self.lm_head_weight = self.wte if config.tie_word_embeddings else mat("lm_head")  # [vocab, d]
        self._act = activation(config.activation_function)

    def variables(self):
        """Every tf.Variable of the network (each once): what a SavedModel must track."""
        seen = []
        for leaf in tf.nest.flatten([self.wte, self.wpe, self.blocks, self.ln_f_scale, self.ln_f_bias,
                                     self.lm_head_weight]):
            if leaf is not None and not any(leaf is v for v in seen):
                seen.append(leaf)
        return seen

    # -- phases --

    def forward(self, tokens, positions, cache: kv.KVCache, view: kv.View, keep_layers=False):
        """Run `s` new tokens per row through the model, writing their keys/values into the cache.

        tokens, positions: [batch, s] int32; view: where they are written and what they may read
        (cache.View: the key mask once this call has written, the slot of tokens[:, 0] (a scalar, or
        one per row when rows have different lengths: speculative decoding), beam search's lineage,
        contrastive search's alternatives: a row's s tokens are candidates for slot `index`, each
        written at index + i until the chosen one is kept, cache.keep_one).
        keep_layers: also return every layer's input (HF's hidden_states: the embeddings, each block's
            output, the last one after the final layer norm) and attention probabilities (without lineage).
        Returns (hidden [batch, s, d] after the final layer norm, updated cache), plus with keep_layers
        (n_layer + 1 x [batch, s, d], n_layer x [batch, heads, s, cache_len]).
        """
        cfg = self.config
        s = tokens.shape[1]
        x = precision.embed(self.wte, tokens) + tf.cast(tf.gather(self.wpe, positions), tf.float32)
        # x: [batch, s, d]
        mask = attention_mask(view, s)  # [batch, 1, s, cache_len] (see there for beams)
        keys, values, inputs, probs = [], [], [], []
        for i, block in enumerate(self.blocks):
            if keep_layers:
                inputs.append(x)
            h = layer_norm(x, block.ln_1_scale, block.ln_1_bias, cfg.layer_norm_epsilon)
            h, k_cache, v_cache, p = self.attention(h, block, i, cache.keys[i], cache.values[i], view, mask,
                                                    whole=keep_layers)
            if keep_layers:
                probs.append(p)
            x = x + h
            h = layer_norm(x, block.ln_2_scale, block.ln_2_bias, cfg.layer_norm_epsilon)
            x = x + linear(self._act(linear(h, block.up_kernel, block.up_bias)), block.down_kernel, block.down_bias)
            keys.append(k_cache)
            values.append(v_cache)
        x = layer_norm(x, self.ln_f_scale, self.ln_f_bias, cfg.layer_norm_epsilon)
        if keep_layers:
            heads = [tf.reshape(p, [-1, cfg.n_head, s, p.shape[-1]]) for p in probs]
            return x, kv.KVCache(tuple(keys), tuple(values)), tuple(inputs) + (x,), tuple(heads)
        return x, kv.KVCache(tuple(keys), tuple(values))

    def attention(self, x, block: Block, layer: int, k_cache, v_cache, view: kv.View, mask, whole: bool = False):
        """Causal self-attention of x [batch, s, d] over the cache; returns (out, k_cache, v_cache,
        probs [groups * heads, group * s, group * cache_len]: the attention probabilities).

        The cache holds heads in its leading dimension ([batch * heads, cache_len, head_dim], see
        cache.py), so the score and value matmuls read the freshly written buffer as it is: any
        reshape between the in-place write and the matmul makes XLA copy the cache.

        Beam search (group = beams > 1) never reorders the cache. A prompt's beam rows lie side by
        side along the slot axis ([prompts * heads, beams * cache_len, head_dim]), so one matmul
        scores every beam's queries against the keys of all beam rows of its prompt.
        A beam row only ever writes at the current slot, so the keys a beam inherited from its
        ancestors stay where the ancestors wrote them; the lineage mask keeps, for each query beam
        and slot, only the row holding that beam's own history.

        A prompt longer than CHUNK (index a Python int: prefill) is attended in causal chunks
        (`causal_chunks`), unless `whole` (the probabilities are wanted in full); probs is then None.
        """
        cfg = self.config
        rows, s, heads, head_dim, group = tf.shape(x)[0], x.shape[1], cfg.n_head, cfg.head_dim, view.group
        groups = rows // group
        qkv = linear(x, block.qkv_kernel, block.qkv_bias)  # [rows, s, 3d]
        qkv = tf.reshape(qkv, [groups, group, s, 3, heads, head_dim])
        qkv = tf.transpose(qkv, [3, 0, 4, 1, 2, 5])  # [3, groups, heads, group, s, head_dim]
        qkv = tf.reshape(qkv, [3, groups * heads * group, s, head_dim])
        q, k, v = qkv[0], qkv[1], qkv[2]  # [rows * heads, s, head_dim]
        # caches: [groups * heads, group * cache_len, head_dim], written in place
        k_cache = kv.write(k_cache, tf.cast(k, k_cache.dtype), view)
        v_cache = kv.write(v_cache, tf.cast(v, v_cache.dtype), view)
        scale = 1.0
        if cfg.scale_attn_weights:
            scale /= math.sqrt(head_dim)
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= layer + 1
        q = tf.reshape(q, [groups * heads, group * s, head_dim])
        if isinstance(view.index, int) and group == 1 and s > CHUNK and not whole:
            out, probs = causal_chunks(q, k_cache, v_cache, mask, view.index, scale, heads), None
        else:
            scores = tf.matmul(q, tf.cast(k_cache, q.dtype), transpose_b=True) * scale
            # scores: [groups * heads, group * s, group * cache_len]
            scores = tf.where(mask, tf.reshape(scores, [groups, heads, group * s, -1]), MASKED)
            probs = tf.reshape(tf.nn.softmax(scores, axis=-1), [groups * heads, group * s, -1])
            out = tf.matmul(probs, tf.cast(v_cache, q.dtype))  # [groups * heads, group * s, head_dim]
        out = tf.transpose(tf.reshape(out, [groups, heads, group, s, head_dim]), [0, 2, 3, 1, 4])
        out = tf.reshape(out, [rows, s, cfg.n_embd])
        return linear(out, block.out_kernel, block.out_bias), k_cache, v_cache, probs

    def lm_head(self, hidden):
        """Logits [..., vocab] (float32) from final hidden states [..., d]; the head is tied to wte."""
        lead = tf.shape(hidden)[:-1]
        flat = tf.reshape(hidden, [-1, self.config.n_embd])
        logits = precision.matmul(flat, self.lm_head_weight, weight_left=False)  # [tokens, vocab]
        return tf.reshape(logits, tf.concat([lead, [self.config.vocab_size]], 0))

    def new_cache(self, batch: int, cache_len: int, group: int = 1) -> kv.KVCache:
        cfg = self.config
        return kv.allocate(cfg.n_layer, batch, cfg.n_head, cache_len, cfg.head_dim, tf.float32, group)

    def prefill(self, tokens, mask, cache_len: int, prefix=None, keep_layers=False):
        """Fill a fresh cache with a left-padded prompt batch.

        tokens, mask: [batch, width]. Returns (hidden [batch, s, d], cache, key_mask [batch, cache_len]).
        key_mask marks prompt slots that are real tokens plus every slot after the prompt (decode steps
        write them in order, and `attention_mask`'s causal part hides those not yet written).
        prefix: None, or (cache, filled) from an earlier call whose slots [0, filled) hold the keys and
        values of tokens[:, :filled]: they are copied, not recomputed, and only the rest of the
        tokens run through the model (hidden then covers tokens[:, filled:], s = width - filled).
        keep_layers: also return (hidden states, attention probabilities) per layer, as `forward` does.
        """
        batch, width = tf.shape(tokens)[0], tokens.shape[1]
        key_mask = kv.grow_key_mask(tf.cast(mask, tf.bool), cache_len)
        cache = self.new_cache(batch, cache_len)
        positions, filled = positions_from_mask(mask), 0
        if prefix is not None:
            old, filled = prefix
            start = kv.View(key_mask, 0)
            cache = kv.KVCache(
                keys=tuple(kv.write(new, o[:, :filled], start) for new, o in zip(cache.keys, old.keys)),
                values=tuple(kv.write(new, o[:, :filled], start) for new, o in zip(cache.values, old.values)),
            )
            tokens, positions = tokens[:, filled:], positions[:, filled:]
        out = self.forward(tokens, positions, cache, kv.View(key_mask, filled), keep_layers=keep_layers)
        return (out[0], out[1], key_mask, out[2:]) if keep_layers else (*out, key_mask)

    def decode_one_token(self, tokens, positions, cache, view: kv.View):
        """One decode step: tokens, positions [batch] -> (logits [batch, vocab], cache)."""
        hidden, cache = self.forward(tokens[:, None], positions[:, None], cache, view)
        return self.lm_head(hidden[:, 0]), cache
