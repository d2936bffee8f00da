"""Diverse (group) beam search (Vijayakumar et al. 2016, arXiv 1610.02424) with the semantics of
transformers 4.55.4's `_group_beam_search` and BeamSearchScorer (5.x moved it out of its core).

The num_beams beams of a prompt form num_beam_groups groups of group_size. Each step, groups choose
one after another: group g's log-probs go through the processors, where diversity_penalty is taken
off each token once per beam of an earlier group that chose it this step (HF's
HammingDiversityLogitsProcessor; a finished group's beams count as choosing pad_token_id, as HF
feeds them pad). Each group then is a beam search of group_size beams with HF's older scorer:

  - the best max(2, 1 + EOS ids) x group_size continuations; those ending in EOS among the best
    group_size are offered to the group's hypotheses (sum_logprobs / generated ** length_penalty),
    the best group_size others run on (reaching max_new_tokens ends nothing: see `finish`);
  - a group is done once it holds group_size hypotheses and (early_stopping False) its best
    continuation this step, as if it ended now, cannot beat its worst one (True: at once; "never":
    with length_penalty > 0 as if it ended at max_new_tokens); the loop stops when every group is;
  - at the end each open group's running beams join its hypotheses at the length reached, and the
    best num_return_sequences over all groups are returned; a hypothesis ended by EOS ends in the
    first EOS id (HF appends eos_token_id[0]).

The rest (prefill, the lineage that stands for reordering the cache, the decode step) is beam
search's loop (beam_search.beam_search); this module gives its Rules.
"""

from __future__ import annotations

import tensorflow as tf

from . import core
from .beam_search import (BeamState, Continuations, Rules, all_open, first_beam_of_each_group, gather_beams,
                          length_scale, next_running, offer_finished, top_continuations)
from .core import CompileKey, Knobs
from .processors import Step


def group_view(t, groups: int):
    """[batch, num_beams, ...] -> [batch * groups, group_size, ...]: each group as a prompt of its own."""
    return tf.reshape(t, [t.shape[0] * groups, t.shape[1] // groups, *t.shape[2:]])


def hypotheses_by_group(s: BeamState, groups: int):
    """The finished buffer (sequences, scores, flags, beam rows), each as group_view gives it."""
    return tuple(group_view(t, groups) for t in (s.finished, s.finished_scores, s.is_finished, s.finished_beams))


def beam_view(t, batch: int):
    """The inverse of group_view: [batch * groups, group_size, ...] -> [batch, num_beams, ...]."""
    return tf.reshape(t, [batch, t.shape[0] // batch * t.shape[1], *t.shape[2:]])


def stack_groups(parts):
    """Per-group tensors [batch, k, ...] -> [batch * groups, k, ...] (group_view's order)."""
    stacked = tf.stack(parts, axis=1)  # [batch, groups, k, ...]
    return tf.reshape(stacked, [-1, *stacked.shape[2:]])


def chosen_counts(tokens, vocab: int):
    """[batch, vocab] float32: how many of each prompt's beams chose each token; tokens [batch, n]."""
    return tf.reduce_sum(tf.one_hot(tokens, vocab, dtype=tf.float32), axis=1)


def group_done(is_finished, finished_scores, best, generated, max_new: int, length_penalty, early_stopping):
    """[groups] bool: HF's BeamHypotheses.is_done over each group's hypotheses [groups, group_size]:
    all slots hold one, and the best continuation `best` [groups] (its summed log-probs) could not
    beat the worst of them."""
    full = tf.reduce_all(is_finished, axis=1)
    if early_stopping is True:
        return full
    length = generated
    if early_stopping == "never":
        length = tf.where(length_penalty > 0.0, max_new, generated)
    worst = tf.reduce_min(finished_scores, axis=1)
    return full & (worst >= best / length_scale(length, length_penalty))


def choose_groups(s: BeamState, mask, knobs: Knobs, key: CompileKey, vocab: int):
    """One step: each group in turn scores, penalised by the earlier groups' choices, and continues;
    then every group's hypotheses and done flag. s.can_improve is [batch, groups]: the group is open."""
    nb, groups, bucket, max_new = key.beam.num_beams, key.beam.groups, key.bucket, key.max_new_tokens
    size = nb // groups
    batch, width = s.running.shape[0], s.running.shape[2]
    keep = max(2, 1 + len(key.eos_ids)) * size  # continuations considered per group
    slot = bucket + s.step
    logprobs = tf.reshape(tf.nn.log_softmax(s.logits), [batch, nb, vocab])
    allowed = core.allowed_next(s.automaton, knobs, key, vocab)
    allowed = None if allowed is None else tf.reshape(allowed, [batch, nb, vocab])
    written = tf.reshape(core.written_slots(mask, s.step, max_new), [batch, nb, width])
    chosen = tf.zeros([batch, vocab])  # the tokens earlier groups chose this step, per prompt
    scored, tops, runs = [], [], []
    for g in range(groups):
        beams = slice(g * size, (g + 1) * size)

        def rows(t):  # [batch, num_beams, ...] -> this group's [batch * group_size, ...]
            return tf.reshape(t[:, beams], [batch * size, *t.shape[2:]])

        step = Step(rows(s.running), rows(written), slot, s.step, key.eos_ids,
                    None if allowed is None else rows(allowed), diversity=tf.repeat(chosen, size, axis=0))
        processed = tf.reshape(core.scores(rows(logprobs), step, knobs, key), [batch, size, vocab])
        top = top_continuations(processed, s.running_scores[:, beams], s.running[:, beams], s.running_beams[:, beams],
                                slot, s.step, keep, first_row=tf.range(batch)[:, None] * nb + g * size)
        run = next_running(top, core.is_eos(top.token, key.eos_ids), size)
        # a done group's beams are fed pad_token_id in the reference, and count as choosing it
        if g < groups - 1:  # (the last group's choices penalise no one)
            tokens = tf.where(s.can_improve[:, g:g + 1], run[0][:, :, slot], key.pad_id)
            chosen += chosen_counts(tokens, vocab)
        scored.append(processed)
        tops.append(top)
        runs.append(run)

    record = core.record(s.record, key, s.step, s.logits, tf.reshape(tf.stack(scored, 1), [batch * nb, vocab]),
                         None, None)
    top = Continuations(*(stack_groups([t[i] for t in tops]) for i in range(len(Continuations._fields))))
    hits = core.is_eos(top.token, key.eos_ids)
    if len(key.eos_ids) > 1:  # the reference's hypotheses end in the first EOS id whichever ended them
        top = top._replace(sequences=core.write_column(top.sequences, slot, tf.where(hits, key.eos_ids[0], top.token)))
    generated = s.step + 1
    is_open = tf.reshape(s.can_improve, [-1, 1])  # [batch * groups, 1]
    finished, finished_scores, is_finished, finished_beams = offer_finished(
        *hypotheses_by_group(s, groups), top, hits, is_open, generated, knobs.length_penalty, key.beam.early_stopping)
    done = group_done(is_finished, finished_scores, top.scores[:, 0], generated, max_new, knobs.length_penalty,
                      key.beam.early_stopping)
    still_open = tf.reshape(is_open[:, 0] & ~done, [batch, groups])
    running, running_scores, running_beams, parents = (tf.concat([run[i] for run in runs], axis=1) for i in range(4))
    parents += tf.repeat(tf.range(groups) * size, size)[None, :]  # a group's parent index -> the prompt's beam
    return s._replace(running=running, running_scores=running_scores, running_beams=running_beams,
                      finished=beam_view(finished, batch), finished_scores=beam_view(finished_scores, batch),
                      is_finished=beam_view(is_finished, batch), finished_beams=beam_view(finished_beams, batch),
                      record=record, can_improve=still_open, done=~tf.reduce_any(still_open)), parents


def finish(s: BeamState, knobs: Knobs, key: CompileKey):
    """The returned hypotheses (HF's BeamSearchScorer.finalize): each open group's running beams join
    its hypotheses, scored at the length reached; then the best num_return_sequences of the prompt's
    hypotheses over all groups, best first."""
    groups, batch = key.beam.groups, s.running.shape[0]
    running = Continuations(group_view(s.running_scores, groups), None, None, group_view(s.running, groups),
                            group_view(s.running_beams, groups))
    ended = tf.ones_like(running.scores, tf.bool)
    finished, scores, _, beams = offer_finished(
        *hypotheses_by_group(s, groups), running, ended, tf.reshape(s.can_improve, [-1, 1]), s.step,
        knobs.length_penalty, False)
    scores, best = tf.math.top_k(beam_view(scores, batch), key.beam.num_return_sequences)
    return gather_beams(beam_view(finished, batch), best), scores, gather_beams(beam_view(beams, batch), best)


RULES = Rules(
    start_scores=first_beam_of_each_group,
    start_open=all_open,
    choose=choose_groups,
    finish=finish,
)
