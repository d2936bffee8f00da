"""DoLa decoding (Chuang et al. 2023, `dola_layers`), as transformers 4.55.4's `_dola_decoding`.

Each step contrasts the final layer's next-token distribution with a "premature" layer's: the LM head
applied to that layer's input hidden state (no final layer norm, as the reference). With several
candidate layers, the one whose distribution is furthest from the final one (Jensen-Shannon
divergence, averaged over the batch's rows: one layer for the whole batch, as the reference picks
it) is used. The scores are then log-softmax(final) - log-softmax(premature) over the tokens within
a factor 10 of the final distribution's best (the rest -inf), and the processors, warpers and the
choice follow as in greedy search or sampling.
"""

from __future__ import annotations

import math

import tensorflow as tf

RELATIVE_TOP = 0.1  # the reference's: keep tokens with probability >= 0.1 x the best one's
BASE_FILTER = -1e-3  # the premature layer's log-prob where a token is filtered out


def kl_from(avg, logprobs):
    """The reference's F.kl_div(logprobs, avg, reduction="none").mean(-1): avg * (log avg - logprobs)
    (0 where avg is 0), averaged over the vocabulary."""
    return tf.reduce_mean(tf.math.xlogy(avg, avg) - avg * logprobs, axis=-1)


def premature_choice(final, premature):
    """The premature logits [rows, vocab] furthest from final [rows, vocab] among premature
    [layers, rows, vocab]: the largest Jensen-Shannon divergence, averaged over rows."""
    if premature.shape[0] == 1:
        return premature[0]
    final_log, premature_log = tf.nn.log_softmax(final), tf.nn.log_softmax(premature)
    avg = 0.5 * (tf.nn.softmax(final)[None] + tf.nn.softmax(premature))  # [layers, rows, vocab]
    js = 0.5 * (kl_from(avg, final_log[None]) + kl_from(avg, premature_log))  # [layers, rows]
    return tf.gather(premature, tf.argmax(tf.reduce_mean(js, axis=1), output_type=tf.int32))


def contrast(final, premature):
    """DoLa's next-token scores [rows, vocab] from the final logits [rows, vocab] and the candidate
    layers' logits [layers, rows, vocab]."""
    final_log = tf.nn.log_softmax(final)
    base_log = tf.nn.log_softmax(premature_choice(final, premature))
    keep = final_log >= tf.reduce_max(final_log, axis=-1, keepdims=True) + math.log(RELATIVE_TOP)
    return tf.where(keep, final_log, float("-inf")) - tf.where(keep, base_log, BASE_FILTER)


def premature_logits(net, hidden_states, layers: tuple[int, ...]):
    """[len(layers), rows, vocab]: the LM head over each candidate layer's input at the last position;
    hidden_states: every layer's input, as net.forward(keep_layers=True) gives them ([rows, s, d] each)."""
    return tf.stack([net.lm_head(hidden_states[i][:, -1]) for i in layers])
