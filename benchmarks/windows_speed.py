"""Speed of two-person generation on cameo-tiny: `--mix windows` through the fast path against
the plain diffusers forward (`--no-fast`), and against merging the two LoRAs (`--mix linear`),
timed side by side in turns (median of the turns' ratios; process CPU time, one thread).

    .venv/bin/python benchmarks/windows_speed.py [--turns 7]     # writes docs/windows_speed.json

The two LoRAs are random (rank 16 at `cameo train`'s default targets): speed does not depend on
what they learned. Equality of the fast and plain windows is tested in tests/test_compose.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

from cameo.generation import GenerateConfig, apply_loras, generate_frames
from cameo.lora import LoraSpec, adapter_state_dict, add_lora
from cameo.lora_files import save_lora_file
from cameo.models import load_pipeline, tiny_model_dir
from common import write_json
from perf_setup import interleaved, ratio

PROMPT = "two people in a park: on the left mike smiling, on the right anna silent"


def random_lora(path: Path, seed: int, trigger: str) -> Path:
    """A LoRA file of `cameo train`'s default shape with random non-zero factors."""
    pipe = load_pipeline(tiny_model_dir())
    spec = LoraSpec()
    add_lora(pipe.transformer, spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    meta = {"trigger": trigger}
    return save_lora_file(path, adapter_state_dict(pipe.transformer), spec, meta, True)


def variant(files: list[str], mix: str, fast: bool, steps: int):
    pipe = load_pipeline(tiny_model_dir())
    loaded = apply_loras(pipe, files, mix=mix)
    cfg = GenerateConfig(prompt=PROMPT, width=128, steps=steps, fast=fast)
    if mix == "windows":
        cfg = replace(cfg, region_prompt=["auto"])
    return lambda: generate_frames(pipe, cfg, loaded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="denoising steps per clip")
    ap.add_argument("--json", default="windows_speed.json", help="file under docs/")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(random_lora(Path(tmp) / f"{t}.safetensors", i, t)) for i, t in
                 enumerate(("mike", "anna"))]  # fmt: skip
        fns = {
            "windows, fast path": variant(files, "windows", True, args.steps),
            "windows, plain forward (--no-fast)": variant(files, "windows", False, args.steps),
            "linear merge, fast path": variant(files, "linear", True, args.steps),
        }
        times = interleaved(fns, args.turns, 1, warmup=1)
    result = {
        "command": "python benchmarks/windows_speed.py"
        + (f" --turns {args.turns}" if args.turns != 7 else "")
        + (f" --steps {args.steps}" if args.steps != 20 else ""),
        "threads": 1,
        "clip": f"64x128, 17 frames, {args.steps} steps, CFG",
        "median_s": {k: round(v["median_s"], 3) for k, v in times.items()},
        "windows fast / plain": round(ratio(times, *list(fns)[:2]), 3),
        "windows fast / linear merge fast": round(ratio(times, *list(fns)[::2]), 3),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
