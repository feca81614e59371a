"""Carry cameo's text encoder to an offline GPU machine that cannot install the MiniLM wheel.

The offline GPU machines reach no package registry, and what travels there is capped at 64 MiB,
while the wheel's fp32 MiniLM is 87 MiB. World captions use only a few hundred of MiniLM's
30,522 word pieces, so ``pack`` keeps those rows of the word-embedding table and stores every
weight in fp16 (22 MB); ``unpack`` rebuilds a full fp32 BertModel folder there. Rows left out
of the pack become NaN, so a caption outside the packed vocabulary cannot pass unnoticed (its
embedding, and the loss that uses it, turn NaN). The pretraining cache stores text embeddings in
fp16 anyway, so fp16 weights cost no precision that training would have kept.

    python benchmarks/device/minilm_transport.py pack .minilm      # here, before the run
    python benchmarks/device/minilm_transport.py unpack .minilm /tmp/minilm   # there
    export CAMEO_MINILM_DIR=/tmp/minilm
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
EMBED = "embeddings.word_embeddings.weight"


def caption_token_ids(n: int = 60_000) -> set[int]:
    """Word pieces of the captions of the first n pretraining samples of each kind (photos,
    clips, two-person clips), read without rendering a pixel."""
    import numpy as np
    from transformers import AutoTokenizer

    import cameo.world.population as pop
    from cameo.models import minilm_dir

    pop.render = lambda figs, scene, h, w: np.zeros((1, 1, 1, 3), np.uint8)  # captions only
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    ids = set(
        tok.all_special_ids
    )  # [PAD] too: prompts are padded, and a NaN pad row poisons attention
    for first, frames in ((0, 17), (50_000_000, 1), (90_000_000, 17)):
        for i in range(first, first + n):
            ids.update(tok(pop.training_sample(i, frames=frames).caption)["input_ids"])
    return ids


def pack(dest: Path) -> None:
    from cameo.models import minilm_dir

    src = minilm_dir()
    dest.mkdir(parents=True, exist_ok=True)
    weights = load_file(src / "model.safetensors")
    keep = torch.tensor(sorted(caption_token_ids()))
    out = {k: v.half() if v.is_floating_point() else v for k, v in weights.items() if k != EMBED}
    out |= {"kept_ids": keep, "kept_rows": weights[EMBED][keep].half()}
    out["vocab_shape"] = torch.tensor(weights[EMBED].shape)
    save_file(out, dest / "pruned.safetensors")
    for name in FILES:
        shutil.copy2(src / name, dest / name)
    print(f"packed {len(keep)} of {weights[EMBED].shape[0]} word pieces into {dest}")


def unpack(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    packed = load_file(src / "pruned.safetensors")
    table = torch.full(tuple(packed.pop("vocab_shape").tolist()), float("nan"))
    table[packed.pop("kept_ids")] = packed.pop("kept_rows").float()
    weights = {k: v.float() if v.is_floating_point() else v for k, v in packed.items()}
    save_file(weights | {EMBED: table}, dest / "model.safetensors")
    for name in FILES:
        shutil.copy2(src / name, dest / name)
    print(f"unpacked MiniLM into {dest}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"]:
        pack(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["unpack"]:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
