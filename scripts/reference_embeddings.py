#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 sentence embeddings for the Rust embedder's test.

An independent implementation of what sentence-transformers computes for this
model — BERT embeddings, 6 encoder layers, mean pooling over the tokens, L2
normalisation — written with numpy in float64, reading the same
model.safetensors and tokenizer.json that scripts/fetch-model.sh installs.
Its output is the committed fixture crates/schedcp/tests/data/minilm_reference.json
that crates/schedcp/tests/embed_reference.rs compares the candle code against.

Only for regenerating the fixture (not needed to build or test schedcp):

    python3 -m venv /tmp/embed-venv
    /tmp/embed-venv/bin/pip install numpy safetensors tokenizers
    scripts/fetch-model.sh
    /tmp/embed-venv/bin/python scripts/reference_embeddings.py [MODEL_DIR]

MODEL_DIR defaults to $SCHEDCP_CACHE/models/all-MiniLM-L6-v2 (same cache
lookup as scripts/fetch-model.sh).
"""

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

# The model's max_seq_length (sentence_bert_config.json); must match MAX_TOKENS in embed.rs.
MAX_TOKENS = 256

SENTENCES = [
    "low latency scheduler for interactive desktop workloads",
    "keep desktop applications responsive with minimal input lag",
    "throughput-oriented batch scheduling for CPU-bound server jobs",
    "EEVDF",
    "The cat sat on the mat.",
    "A chocolate cake recipe with fresh strawberries and cream.",
    (
        "This sched_ext policy targets mixed workloads on machines that run both "
        "latency-sensitive services and background batch jobs. It keeps a short "
        "per-CPU queue for tasks that wake up frequently and sleep quickly, such as "
        "audio threads, input handlers and web request workers, and dispatches them "
        "ahead of long-running compute tasks. CPU-bound tasks are grouped on a shared "
        "queue with longer time slices to reduce context switches and cache misses. "
        "Idle CPUs are found in the same last-level cache domain first, then across "
        "the NUMA node, and tasks migrate only when the imbalance persists for several "
        "scheduling periods, which limits thrashing under bursty load."
    ),
]
# Past MAX_TOKENS: checks that both sides cut the same way.
SENTENCES.append(SENTENCES[-1] + " " + SENTENCES[-1])

# Pairs (a, b, c): sentence a must be closer to b than to c.
SIMILAR_OVER_UNRELATED = [(0, 1, 4), (0, 1, 5), (1, 0, 4), (1, 0, 5), (6, 0, 4), (6, 2, 5)]


def default_model_dir() -> Path:
    if os.environ.get("SCHEDCP_CACHE"):
        cache = Path(os.environ["SCHEDCP_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        cache = Path(os.environ["XDG_CACHE_HOME"]) / "schedcp"
    else:
        cache = Path.home() / ".cache" / "schedcp"
    return cache / "models" / "all-MiniLM-L6-v2"


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    # The exact (erf) GELU that BERT's "gelu" activation means.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, w, b):
    # Stored like torch.nn.Linear: weight is (out, in).
    return x @ w.T + b


class Bert:
    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.eps = cfg["layer_norm_eps"]
        assert cfg["hidden_act"] == "gelu", cfg["hidden_act"]
        raw = load_file(str(model_dir / "model.safetensors"))
        # Some exports prefix every name with "bert."; accept both.
        self.w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items()}

    def __call__(self, ids, type_ids):
        """Last hidden layer for one unpadded sequence: (len, hidden)."""
        w = self.w
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(n)]
            + w["embeddings.token_type_embeddings.weight"][type_ids]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        hd = self.hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def proj(name, h):
                return linear(h, w[p + name + ".weight"], w[p + name + ".bias"])

            q = proj("attention.self.query", x).reshape(n, self.heads, hd).transpose(1, 0, 2)
            k = proj("attention.self.key", x).reshape(n, self.heads, hd).transpose(1, 0, 2)
            v = proj("attention.self.value", x).reshape(n, self.heads, hd).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # (heads, n, n)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(n, self.hidden)
            x = layer_norm(
                x + proj("attention.output.dense", ctx),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inter = gelu(proj("intermediate.dense", x))
            x = layer_norm(
                x + proj("output.dense", inter),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        return x


def main() -> int:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model_dir()
    out = Path(__file__).resolve().parent.parent / "crates/schedcp/tests/data/minilm_reference.json"
    if not (model_dir / "model.safetensors").is_file():
        print(f"no model in {model_dir}; run scripts/fetch-model.sh", file=sys.stderr)
        return 3

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # The shipped tokenizer pads to 128; a single unpadded sequence needs no mask.
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    bert = Bert(model_dir)

    entries = []
    vectors = []
    for text in SENTENCES:
        enc = tok.encode(text)
        hidden = bert(np.array(enc.ids), np.array(enc.type_ids))
        v = hidden.mean(axis=0)  # every position is a real token: plain mean == masked mean
        v /= np.linalg.norm(v)
        vectors.append(v)
        entries.append({"text": text, "tokens": len(enc.ids), "vector": [float(f"{x:.9g}") for x in v]})
        print(f"{len(enc.ids):4d} tokens  {text[:60]!r}", file=sys.stderr)

    cos = np.array([[float(a @ b) for b in vectors] for a in vectors])
    for a, b, c in SIMILAR_OVER_UNRELATED:
        ok = cos[a, b] > cos[a, c]
        print(f"cos({a},{b})={cos[a, b]:.4f} > cos({a},{c})={cos[a, c]:.4f}: {ok}", file=sys.stderr)
        if not ok:
            print("semantic sanity check failed: the reference model is wrong", file=sys.stderr)
            return 1

    sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    doc = {
        "model": "all-MiniLM-L6-v2",
        "safetensors_sha256": sha,
        "max_tokens": MAX_TOKENS,
        "generator": "scripts/reference_embeddings.py (numpy float64 BERT forward, mean pooling, L2 norm)",
        "similar_over_unrelated": [list(t) for t in SIMILAR_OVER_UNRELATED],
    }
    # One line per sentence keeps the fixture readable and its diffs small.
    head = "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in doc.items())
    body = ",\n".join("  " + json.dumps(e) for e in entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f'{{\n{head} "sentences": [\n{body}\n ]\n}}\n')
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
