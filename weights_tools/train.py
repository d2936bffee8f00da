"""Train a small GPT-2 from a text corpus with minigen's own TensorFlow model; save it as a
Hugging Face GPT-2 directory (config.json, model.safetensors with HF names, tokenizer.json).

    python -m weights_tools train CORPUS OUT [--layers 6 --width 256 --heads 8 --context 256
        --vocab-size 8192 --steps 3000 --batch-size 16 --lr 1e-3 --seed 0 --tokenizer DIR]

1. A byte-level BPE tokenizer is trained on the corpus (or taken from --tokenizer DIR, so a draft
   model shares its target's vocabulary).
2. The corpus is encoded once (documents separated by <|endoftext|>). With a directory of files,
   the last file (in name order) is the held-out validation split; with one file, its last 10 %.
3. Training: an XLA-compiled step over random windows of `context + 1` tokens (window choice is a
   function of seed and step, so a resumed run sees the same batches), AdamW (weight decay on
   matrices only), linear warmup then cosine decay, gradient clipping at global norm 1.
4. Every --eval-every steps: validation loss and perplexity over a fixed set of held-out windows;
   every --checkpoint-every steps: OUT/checkpoint.npz (weights, optimizer moments, step), written to
   a temporary file and renamed, from which an interrupted run resumes.
5. At the end, OUT holds the Hugging Face directory and OUT/training.json the run's record.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

EOT = "<|endoftext|>"


# ---- corpus and tokenizer -----------------------------------------------------------------------


def read_corpus(path: str) -> tuple[list[str], list[str]]:
    """(training documents, validation documents)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".txt")
        if len(files) < 2:
            raise SystemExit(f"error: {path} needs at least two .txt files (the last is held out)")
        docs = [f.read_text(encoding="utf-8") for f in files]
        return docs[:-1], docs[-1:]
    if not p.is_file():
        raise SystemExit(f"error: corpus {path!r} does not exist")
    lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = int(len(lines) * 0.9)
    return ["".join(lines[:cut])], ["".join(lines[cut:])]


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return tok


def encode(tok, docs: list[str]) -> np.ndarray:
    eot = tok.token_to_id(EOT)
    ids: list[int] = []
    for doc in docs:
        for enc in tok.encode_batch(doc.split("\n\n")):  # paragraphs: fast, and BPE never spans them anyway
            ids.extend(enc.ids)
            ids.extend(tok.encode("\n\n").ids)
        ids.append(eot)
    return np.asarray(ids, np.int32)


# ---- model --------------------------------------------------------------------------------------


def hf_config(args, vocab_size: int, eot: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": args.context,
        "n_embd": args.width,
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": True,
    }


def variables_by_name(model) -> dict:
    """minigen tensor name -> the model's tf.Variable (kernels are held [out, in] in memory)."""
    from minigen.layout import BLOCK_TENSORS

    out = {"wte": model.wte.values, "wpe": model.wpe, "ln_f.scale": model.ln_f_scale, "ln_f.bias": model.ln_f_bias}
    for i, block in enumerate(model.blocks):
        for field, name in BLOCK_TENSORS.items():
            value = getattr(block, field)
            out[f"h.{i}.{name}"] = value.values if field.endswith("_kernel") else value  # a float32 Matrix's values
    return out


def file_layout(name: str, value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.T) if name.endswith(".kernel") else value


def register_gradients():
    """The inference model's XLA ops have no registered gradients; training needs two."""
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    def barrier_grad(op, *grads):
        return list(grads)

    def dus_grad(op, grad):
        update = op.inputs[1]
        index = op.inputs[2]
        d_update = xla.dynamic_slice(grad, index, tf.shape(update))
        d_buffer = xla.dynamic_update_slice(grad, tf.zeros_like(update), index)
        return [d_buffer, d_update, None]

    for name, fn in (("XlaOptimizationBarrier", barrier_grad), ("XlaDynamicUpdateSlice", dus_grad)):
        try:
            tf.RegisterGradient(name)(fn)
        except KeyError:  # already registered (a second call in one process)
            pass


# ---- training -----------------------------------------------------------------------------------


def lr_at(step, peak, warmup, total):
    import tensorflow as tf

    step = tf.cast(step, tf.float32)
    warm = peak * (step + 1.0) / warmup
    progress = tf.clip_by_value((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    cosine = 0.1 * peak + 0.9 * peak * 0.5 * (1.0 + tf.cos(math.pi * progress))  # decays to 10 % of peak
    return tf.where(step < warmup, warm, cosine)


def windows(tokens: np.ndarray, batch: int, context: int, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, len(tokens) - context - 1, size=batch)
    return np.stack([tokens[s:s + context + 1] for s in starts])  # [batch, context + 1]


def progress_line(step, total, loss, tok_s, started_at, first_step):
    done = (step - first_step) / max(total - first_step, 1)
    eta = (time.time() - started_at) / max(done, 1e-9) * (1 - done) if done > 0 else 0
    bar = "#" * int(30 * step / total)
    sys.stderr.write(f"\r[{bar:30s}] step {step}/{total} loss {loss:.3f} {tok_s:,.0f} tok/s ETA {eta / 60:.0f} min ")
    sys.stderr.flush()


def train(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    from minigen.config import GPT2Config
    from minigen.model import Transformer, random_params

    from .export_hf import hf_names

    register_gradients()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_docs, val_docs = read_corpus(args.corpus)
    if (out / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))  # resuming: keep the vocabulary
    elif args.tokenizer:
        tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    else:
        print(f"training a {args.vocab_size}-token byte-level BPE on {args.corpus}", file=sys.stderr)
        tok = train_tokenizer(train_docs, args.vocab_size)
    tok.save(str(out / "tokenizer.json"))
    train_ids, val_ids = encode(tok, train_docs), encode(tok, val_docs)
    print(f"corpus: {len(train_ids):,} training tokens, {len(val_ids):,} held out", file=sys.stderr)

    eot = tok.token_to_id(EOT)
    hf = hf_config(args, tok.get_vocab_size(), eot)
    config = GPT2Config.from_dict(hf)
    params = random_params(config, args.seed)  # GPT-2's initialisation
    checkpoint = out / "checkpoint.npz"
    start_step, history = 0, []
    moments = None
    if checkpoint.is_file():
        saved = np.load(checkpoint, allow_pickle=False)
        start_step = int(saved["step"])
        params = {k[2:]: saved[k] for k in saved.files if k.startswith("p:")}
        moments = {k: saved[k] for k in saved.files if k.startswith(("m:", "v:"))}
        history = json.loads(str(saved["history"]))
        print(f"resuming from {checkpoint} at step {start_step}", file=sys.stderr)
    model = Transformer(config, params)
    named = variables_by_name(model)
    names = sorted(named)
    weights = [named[n] for n in names]
    m = [tf.Variable(tf.zeros_like(w)) for w in weights]
    v = [tf.Variable(tf.zeros_like(w)) for w in weights]
    if moments:
        for n, mi, vi in zip(names, m, v):
            mi.assign(moments["m:" + n])
            vi.assign(moments["v:" + n])
    decay = [w.shape.rank == 2 and not n.startswith(("wte", "wpe")) for n, w in zip(names, weights)]
    batch, context = args.batch_size, args.context

    def loss_of(tokens):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        hidden, _, _ = model.prefill(inputs, tf.ones_like(inputs), cache_len=context)
        logits = model.lm_head(hidden)  # [batch, context, vocab]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))

    @tf.function(jit_compile=True, autograph=False)
    def train_step(tokens, step):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss = loss_of(tokens)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, weights)]  # embedding grads come as IndexedSlices
        grads, norm = tf.clip_by_global_norm(grads, 1.0)
        lr = lr_at(step, args.lr, args.warmup, args.steps)
        t = tf.cast(step, tf.float32) + 1.0
        b1, b2 = 0.9, 0.95
        for w, g, mi, vi, wd in zip(weights, grads, m, v, decay):
            mi.assign(b1 * mi + (1 - b1) * g)
            vi.assign(b2 * vi + (1 - b2) * g * g)
            update = (mi / (1 - b1**t)) / (tf.sqrt(vi / (1 - b2**t)) + 1e-8)
            if wd:
                update += args.weight_decay * w
            w.assign_sub(lr * update)
        return loss, norm

    @tf.function(jit_compile=True, autograph=False)
    def eval_step(tokens):
        return loss_of(tokens)

    val_rng = np.random.default_rng([args.seed, 999_999])
    val_batches = [windows(val_ids, batch, context, val_rng) for _ in range(args.eval_batches)]

    def validate():
        return float(np.mean([eval_step(tf.constant(b)).numpy() for b in val_batches]))

    def save_checkpoint(step):
        arrays = {f"p:{n}": file_layout(n, named[n].numpy()) for n in names}
        arrays.update({f"m:{n}": mi.numpy() for n, mi in zip(names, m)})
        arrays.update({f"v:{n}": vi.numpy() for n, vi in zip(names, v)})
        tmp = out / "checkpoint.tmp.npz"
        np.savez(tmp, step=np.int64(step), history=np.array(json.dumps(history)), **arrays)
        os.replace(tmp, checkpoint)

    started, last_t, last_step = time.time(), time.time(), start_step
    loss = float("nan")
    for step in range(start_step, args.steps):
        tokens = windows(train_ids, batch, context, np.random.default_rng([args.seed, step]))
        loss, _ = train_step(tf.constant(tokens), tf.constant(step))
        loss = float(loss)
        if not math.isfinite(loss):
            raise SystemExit(f"error: loss became {loss} at step {step}; lower --lr")
        done = step + 1
        if done % 10 == 0 or done == args.steps:
            now = time.time()
            progress_line(done, args.steps, loss, (done - last_step) * batch * context / (now - last_t), started, start_step)
            last_t, last_step = now, done
        if done % args.eval_every == 0 or done == args.steps:
            val = validate()
            history.append({"step": done, "train_loss": loss, "val_loss": val, "val_ppl": math.exp(val),
                            "elapsed_s": round(time.time() - started, 1)})
            sys.stderr.write(f"\nstep {done}: train loss {loss:.3f}, val loss {val:.3f}, val ppl {math.exp(val):.1f}\n")
        interrupted = args.stop_after is not None and done - start_step >= args.stop_after and done < args.steps
        if done % args.checkpoint_every == 0 or done == args.steps or interrupted:
            save_checkpoint(done)
        if interrupted:
            print(f"\nstopped after step {done} (--stop-after); run the same command again to resume", file=sys.stderr)
            return {"stopped_at": done}

    # the Hugging Face directory
    to_hf = hf_names(config)
    tensors = {to_hf[n]: file_layout(n, named[n].numpy()) for n in names}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    record = {
        "command": "python -m weights_tools train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "",
        "steps": args.steps, "batch_size": batch, "context": context, "lr": args.lr,
        "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
        "history": history, "seconds_this_run": round(time.time() - started, 1),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    load_file(str(out / "model.safetensors"))  # re-read: a broken write fails here, not later
    print(f"\nwrote {out}: config.json, model.safetensors, tokenizer.json, training.json", file=sys.stderr)
    return record


def add_train_arguments(p) -> None:
    p.add_argument("corpus", help="a .txt file, or a directory of .txt files (the last one is held out)")
    p.add_argument("out", help="output directory (the Hugging Face GPT-2; resumes from OUT/checkpoint.npz)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--tokenizer", help="directory with a tokenizer.json to reuse instead of training one")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop this invocation after N steps, with a checkpoint (as an interruption would); rerun to resume")
