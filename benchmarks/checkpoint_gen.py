"""A generated bf16 checkpoint laid out as Hugging Face writes a Llama-style model.

``python benchmarks/checkpoint_gen.py OUT --params 1e9`` writes a folder as
``transformers``' ``save_pretrained`` leaves one: shards
``model-0000i-of-0000n.safetensors`` filled in module order up to a maximum
shard size, each file's tensors in name order after a header whose
``__metadata__`` is ``{"format": "pt"}`` (what the safetensors library does),
``model.safetensors.index.json`` with ``metadata.total_size`` and a sorted
``weight_map``, and a ``config.json``.

The values are drawn, not trained: every matrix normal with a standard
deviation of its kind and depth (near what Llama checkpoints show: about 0.02,
growing slowly with depth, smaller for ``v``/``o``), the RMSNorm weights near 1.
Their entropy is therefore that of a Gaussian, which real weights beat (heavier
tails, structure): compression ratios measured on them are not a real model's.

Tensors are written one at a time by the safetensors plugin's positioned
writer, so generating a checkpoint larger than memory holds one tensor.
Shared by ``bench_checkpoint.py`` and the plugin's memory test.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from nnc_safetensors.layout import Entry, FileWriter, header_text, packed

__all__ = ["Shape", "shape_for", "tensors_of", "generate"]


@dataclass(frozen=True)
class Shape:
    """Llama dimensions: ``kv`` is the width of k_proj/v_proj (grouped-query attention)."""

    hidden: int
    intermediate: int
    vocab: int
    kv: int
    layers: int

    def config(self) -> dict:
        heads = max(1, self.hidden // 64)
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, self.kv // 64),
            "head_dim": self.hidden // heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


#: TinyLlama-1.1B's dimensions: 22 layers of these make 1.1 B parameters
LARGE = dict(hidden=2048, intermediate=5632, vocab=32000, kv=256)
#: a small Llama for quick runs (hundreds of millions of parameters and less)
SMALL = dict(hidden=768, intermediate=2048, vocab=16000, kv=256)


def _per_layer(hidden: int, intermediate: int, kv: int) -> int:
    return 2 * hidden * hidden + 2 * kv * hidden + 3 * intermediate * hidden + 2 * hidden


def shape_for(params: float, **dims: int) -> Shape:
    """Dimensions (``LARGE`` from 500 M parameters on, else ``SMALL``, each
    overridable) and as many layers as make about ``params`` parameters."""
    chosen = {**(LARGE if params >= 5e8 else SMALL), **{k: v for k, v in dims.items() if v}}
    fixed = 2 * chosen["vocab"] * chosen["hidden"] + chosen["hidden"]
    layers = max(1, round((params - fixed) / _per_layer(chosen["hidden"], chosen["intermediate"], chosen["kv"])))
    return Shape(layers=layers, **chosen)


def tensors_of(shape: Shape) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, shape, standard deviation; 0 for a norm) in module order, as a state dict lists them."""
    h, f, kv = shape.hidden, shape.intermediate, shape.kv
    out: list[tuple[str, tuple[int, ...], float]] = [("model.embed_tokens.weight", (shape.vocab, h), 0.02)]
    for i in range(shape.layers):
        depth = 1 + 0.5 * i / max(1, shape.layers - 1)  # later layers: larger weights, as in trained Llamas
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (h, h), 0.025 * depth),
            (p + "self_attn.k_proj.weight", (kv, h), 0.025 * depth),
            (p + "self_attn.v_proj.weight", (kv, h), 0.012 * depth),
            (p + "self_attn.o_proj.weight", (h, h), 0.012 * depth),
            (p + "mlp.gate_proj.weight", (f, h), 0.02 * depth),
            (p + "mlp.up_proj.weight", (f, h), 0.018 * depth),
            (p + "mlp.down_proj.weight", (h, f), 0.018 * depth),
            (p + "input_layernorm.weight", (h,), 0.0),
            (p + "post_attention_layernorm.weight", (h,), 0.0),
        ]
    out += [("model.norm.weight", (h,), 0.0), ("lm_head.weight", (shape.vocab, h), 0.02)]
    return out


def _value(rng: np.random.Generator, dims: tuple[int, ...], std: float) -> np.ndarray:
    if std == 0.0:  # RMSNorm weights: near 1, a few far from it
        values = rng.normal(1.0, 0.08, dims).astype(np.float32)
    else:
        values = rng.standard_normal(dims, dtype=np.float32)
        values *= std
    return values.astype(ml_dtypes.bfloat16)


def generate(out: Path, shape: Shape, *, shard_bytes: int = 2_000_000_000, seed: int = 0) -> dict:
    """Write the checkpoint into the new folder ``out``; returns its index."""
    specs = tensors_of(shape)
    shards: list[list[tuple[str, tuple[int, ...], float]]] = [[]]
    size = 0
    for spec in specs:  # transformers' rule: a new shard when the next tensor would pass the maximum
        nbytes = 2 * int(np.prod(spec[1]))
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    out.mkdir(parents=True)
    names = (
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        if len(shards) > 1
        else ["model.safetensors"]
    )
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for file, members in zip(names, shards):
        members = sorted(members)  # the safetensors library orders a file's tensors by name (one dtype here)
        entries: list[Entry] = packed([(name, "BF16", dims) for name, dims, _ in members])
        writer = FileWriter(out / file, header_text(entries, {"format": "pt"}), entries[-1].end)
        try:
            for entry, (name, dims, std) in zip(entries, members):
                writer.write(entry, _value(rng, dims, std))
                weight_map[name] = file
                total += entry.nbytes
        finally:
            writer.close()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / "config.json").write_text(json.dumps(shape.config(), indent=2, sort_keys=True) + "\n")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to create")
    parser.add_argument("--params", type=float, default=2e8, help="about this many parameters (e.g. 1e9)")
    parser.add_argument("--shard-bytes", type=float, default=2e9, help="maximum shard size in bytes (default 2e9)")
    for dim in ("hidden", "intermediate", "vocab", "kv"):
        parser.add_argument(f"--{dim}", type=int, help=f"override the {dim} dimension")
    args = parser.parse_args()
    shape = shape_for(args.params, hidden=args.hidden, intermediate=args.intermediate, vocab=args.vocab, kv=args.kv)
    index = generate(args.out, shape, shard_bytes=int(args.shard_bytes))
    print(
        json.dumps(
            {
                "shape": shape.__dict__,
                "bytes": index["metadata"]["total_size"],
                "shards": len(set(index["weight_map"].values())),
            }
        )
    )


if __name__ == "__main__":
    main()
