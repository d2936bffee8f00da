"""An independent NumPy GPT-2 forward pass over a Hugging Face checkpoint's own tensors.

Used by `verify` to check a converted model: it shares no code with minigen's TensorFlow model
(plain loops, full-sequence causal attention, no cache), so agreement means the conversion and
the TF forward pass are both right.
"""

from __future__ import annotations

import math

import numpy as np


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _activation(name, x):
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name == "gelu":
        from math import erf

        return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))
    if name == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if name == "relu":
        return np.maximum(x, 0)
    if name in ("silu", "swish"):
        return x / (1 + np.exp(-x))
    raise ValueError(name)


def reference_logits(hf: dict[str, np.ndarray], config, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits [batch, seq, vocab] (float64) for each row computed alone over its real tokens.

    hf: tensors under HF names without the `transformer.` prefix. Padded positions get zeros.
    The head is wte when config.tie_word_embeddings, else lm_head.weight: pass the config as the
    reference loads it (untied when the checkpoint's own head differs, see `has_own_head`).
    """
    w = {k: np.asarray(v, dtype=np.float64) for k, v in hf.items()}
    head = w["wte.weight"] if config.tie_word_embeddings else w["lm_head.weight"]
    batch, seq = ids.shape
    out = np.zeros((batch, seq, config.vocab_size))
    nh, hd = config.n_head, config.n_embd // config.n_head
    for row in range(batch):
        keep = np.nonzero(mask[row])[0]
        tokens = ids[row, keep]
        n = len(tokens)
        x = w["wte.weight"][tokens] + w["wpe.weight"][np.arange(n)]
        causal = np.tril(np.ones((n, n), dtype=bool))
        for i in range(config.n_layer):
            p = f"h.{i}."
            h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], config.layer_norm_epsilon)
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = np.split(qkv, 3, axis=-1)
            heads = []
            for j in range(nh):
                sl = slice(j * hd, (j + 1) * hd)
                s = q[:, sl] @ k[:, sl].T
                if config.scale_attn_weights:
                    s = s / math.sqrt(hd)
                if config.scale_attn_by_inverse_layer_idx:
                    s = s / (i + 1)
                s = np.where(causal, s, -np.inf)
                s = np.exp(s - s.max(-1, keepdims=True))
                heads.append((s / s.sum(-1, keepdims=True)) @ v[:, sl])
            x = x + np.concatenate(heads, -1) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], config.layer_norm_epsilon)
            h = _activation(config.activation_function, h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], config.layer_norm_epsilon)
        out[row, keep] = x @ head.T
    return out
