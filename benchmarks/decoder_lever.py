"""A pretraining run's decoder against the shipped one, on what it changes for a person.

    .venv/bin/python benchmarks/decoder_lever.py --run runs/adv --stage decoder-adversarial \\
        --work runs/fresh [--json decoder_adversarial.json]

The encoder is the same (decoder stages freeze it), so every latent keeps its meaning: the
clone clips that ``benchmarks/clone_quality.py --work DIR`` kept (their latents, exactly as the
pipeline decoded them) are decoded again by each decoder and judged as that benchmark judges
them: cameo's eyes (identified among 100, identity), sharpness against the person's real
renders of the same prompts, and dlib's face descriptor in the benchmark's line-up. Held-out
renders through each VAE give the reconstruction PSNR and the identity ceiling
(``benchmarks/base_quality.py``'s functions). Writes docs/<json>.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
from base_quality import identity_through_vae, vae_psnr
from cameo.metrics.evaluate import Eyes, load_references, score_clip, summarise
from cameo.metrics.face_lineup import FaceLineup
from cameo.metrics.scores import self_similarity
from cameo.metrics.sharpness import laplacian_energy
from cameo.models import load_pipeline
from cameo.pretrain import PretrainConfig, resolve_architecture
from cameo.training import checkpoint as ckpt
from clone_quality import face_judge, real_scene_clip
from common import write_json


def stage_vae(run: Path, stage: str):
    """The shipped VAE with the decoder of ``stage``'s latest checkpoint (same encoder)."""
    cfg = PretrainConfig(out=str(run))
    resolve_architecture(cfg, resume=True)
    last = ckpt.latest(run / stage)
    if last is None:
        raise SystemExit(f"no complete {stage} checkpoint in {run}")
    vae = load_pipeline().vae.float()
    tensors = ckpt.load(last)[0]
    decoder = {k: v for k, v in tensors.items() if k.startswith(("decoder.", "post_quant_conv."))}
    vae.load_state_dict(decoder, strict=False)
    return vae.eval(), int(last.name.split("-")[-1])


def decode(vae, z: torch.Tensor) -> np.ndarray:
    """Latents (1, C, F', h, w) as the pipeline decodes them -> uint8 frames (F, H, W, 3)."""
    with torch.no_grad():
        video = vae.decode(z.to(vae.dtype)).sample[0]  # (3, F, H, W) in [-1, 1]
    pixels = (video / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).float().numpy()
    return (pixels * 255 + 0.5).astype(np.uint8)


def kept_clips(folder: Path) -> tuple[list[torch.Tensor], list[tuple[str, int]]]:
    """A person's kept clone latents and their (scene, seed) from the benchmark's prompts."""
    path = folder / "clone_latents.safetensors"
    with safe_open(str(path), "pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        latents = [f.get_tensor(k) for k in sorted(f.keys())]
    scenes = []
    for p in prompts:  # "mike, <scene> (seed <100 k + s>)"
        text, seed = p.rsplit(" (seed ", 1)
        scenes.append((text.split(", ", 1)[1], int(seed.rstrip(")")) % 100))
    return latents, scenes


def one_person(folder: Path, vaes: dict, eyes: Eyes, lineup: FaceLineup | None) -> dict:
    person = int(folder.name.removeprefix("p"))
    latents, scenes = kept_clips(folder)
    pix = load_references(folder / "photos")
    refs = eyes.embed(pix)
    self_sim = self_similarity(refs)
    real = [real_scene_clip(person, scene, seed) for scene, seed in scenes]
    sharp_real = np.mean([laplacian_energy(c) for c in real])
    row: dict = {"person": person}
    for name, vae in vaes.items():
        clips = [decode(vae, z) for z in latents]
        recs = [
            score_clip(eyes, c, f"mike, {s}", refs, self_sim)
            for c, (s, _) in zip(clips, scenes, strict=True)
        ]
        s = summarise(recs)
        row[name] = {
            "identification": s["identification_rate"],
            "identity": s["identity_normalised"],
            "sharpness_ratio": float(np.mean([laplacian_energy(c) for c in clips]) / sharp_real),
        }
        if lineup is not None:
            judged = face_judge(lineup, pix, clips, real, real[:1])
            row[name]["face_identification"] = judged.get("face_identification_clone")
            row[name]["face_found"] = judged.get("face_found_clone")
            row["face_identification_real"] = judged.get("face_identification_real")
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="pretraining run folder")
    ap.add_argument("--stage", default="decoder-adversarial", help="its decoder stage")
    ap.add_argument("--work", required=True, help="clone_quality.py --work folder (p<N>/)")
    ap.add_argument("--json", default="decoder_lever.json", help="file name under docs/")
    args = ap.parse_args()
    torch.set_num_threads(1)
    eyes = Eyes()
    tuned, step = stage_vae(Path(args.run), args.stage)
    vaes = {"shipped": load_pipeline().vae.float().eval(), "tuned": tuned}
    through = {
        name: {**vae_psnr(vae), **identity_through_vae(vae, eyes)} for name, vae in vaes.items()
    }
    print(through, flush=True)
    cache = Path(args.work) / "face_lineup.npy"
    lineup = FaceLineup(np.load(cache)) if cache.is_file() else None
    folders = sorted(
        (d for d in Path(args.work).glob("p*") if (d / "clone_latents.safetensors").is_file()),
        key=lambda d: int(d.name[1:]),
    )
    rows = [one_person(d, vaes, eyes, lineup) for d in folders]
    keys = ("identification", "identity", "sharpness_ratio", "face_identification")
    mean = {
        name: {
            k: float(np.mean([r[name][k] for r in rows if r[name].get(k) is not None]))
            for k in keys
        }
        for name in vaes
    }
    write_json(
        args.json,
        {
            "command": "python benchmarks/decoder_lever.py " + shlex.join(sys.argv[1:]),
            "stage": args.stage,
            "stage_step": step,
            "through_vae": through,
            "clones_redecoded": mean,
            "people": [r["person"] for r in rows],
            "rows": rows,
        },
    )
    print(json.dumps({"through_vae": through, "clones_redecoded": mean}, indent=1))


if __name__ == "__main__":
    main()
