"""cameo's eyes and `cameo eval` on known renders (uses the shipped encoder and probes)."""

import json
import random

import numpy as np
import pytest
import torch

from cameo.cli import main
from cameo.data.world_folders import write_person_clip, write_person_folder
from cameo.metrics.evaluate import Eyes
from cameo.metrics.stills import random_still


@pytest.fixture(scope="module")
def eyes():
    return Eyes()


def test_identity_encoder_is_invariant_to_scene(eyes):
    rng = random.Random("test/invariance")
    people, shots = 12, 4
    pix = np.stack(
        [random_still("heldout", 700 + p, rng)[0] for p in range(people) for _ in range(shots)]
    )
    e = eyes.embed(pix).view(people, shots, -1)
    sims = torch.einsum("psd,qtd->psqt", e, e)
    same = torch.stack(
        [sims[p, :, p][~torch.eye(shots, dtype=torch.bool)].mean() for p in range(people)]
    ).mean()
    diff = torch.stack(
        [sims[p, :, q].mean() for p in range(people) for q in range(people) if p != q]
    ).mean()
    assert same > diff + 0.3, (same, diff)


def test_probes_read_known_renders(eyes):
    rng = random.Random("test/probes")
    data = [random_still("heldout", 900 + i, rng) for i in range(60)]
    out = eyes.probe(
        torch.as_tensor(np.stack([d[0] for d in data])).permute(0, 3, 1, 2).float() / 127.5 - 1
    )
    # Held-out validation (600 renders, docs/measurement.md): background 1.000, hair 0.965,
    # glasses 0.965, hat 0.998, people 1.000, yaw direction 1.000; floors leave room for 60.
    for head, floor in (
        ("background", 0.95),
        ("hair", 0.85),
        ("glasses", 0.85),
        ("hat", 0.9),
        ("people", 0.95),
    ):
        y = torch.tensor([d[1][head] for d in data])
        keep = y != -100
        acc = (out[head].argmax(1)[keep] == y[keep]).float().mean()
        assert acc > floor, (head, acc)
    yaw = torch.tensor([d[1]["yaw"] for d in data])
    turned = yaw.abs() > 0.2
    assert (torch.sign(out["yaw"][turned]) == torch.sign(yaw[turned])).float().mean() > 0.9


def test_probe_reads_whole_canvases_like_single_frames(eyes):
    """GroupNorm has no batch statistics: a frame read alone or in a batch, at 64x64 or inside a
    64x128 canvas batch, gives the same outputs."""
    rng = random.Random("test/probe-shapes")
    singles = np.stack([random_still("heldout", 950 + i, rng)[0] for i in range(6)])
    wide = np.stack(
        [random_still("heldout", 960 + i, rng, width=128, two=i % 2 == 0)[0] for i in range(4)]
    )
    to = lambda f: torch.as_tensor(f).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        batch = eyes.probe(to(singles))["hair"]
        alone = torch.cat([eyes.probe(to(singles[i : i + 1]))["hair"] for i in range(6)])
        assert torch.allclose(batch, alone, atol=1e-4)
        people = eyes.probe(to(wide))["people"].argmax(1)
    assert people.tolist() == [1, 0, 1, 0]


def test_eval_clip_folder_identifies_the_real_person(tmp_path, capsys):
    photos = write_person_folder(31, tmp_path / "photos", 8)
    clips = tmp_path / "clips"
    write_person_clip(31, clips / "same.mp4", scene_seed=1)
    write_person_clip(32, clips / "other.mp4", scene_seed=1)
    out = tmp_path / "report.json"
    assert main(["eval", "--clips", str(clips), "--photos", str(photos), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    by = {
        c["file"].rsplit(".", 1)[0] + ".mp4": c["people"][0] for c in report["clips"]
    }  # one entry per clip stem
    assert len(report["clips"]) == 2
    for rec in by.values():
        assert {
            "identity",
            "identity_normalised",
            "identity_per_frame",
            "identified",
            "identification_rank",
            "prompt_fidelity",
            "temporal_consistency",
            "observed",
            "expected",
        } <= rec.keys()
        assert len(rec["identity_per_frame"]) == 17
    assert by["same.mp4"]["identified"] and by["same.mp4"]["identity_normalised"] > 0.8
    assert by["other.mp4"]["identity_normalised"] < by["same.mp4"]["identity_normalised"] - 0.2
    assert "summary" in capsys.readouterr().out
    assert (
        main(["eval", "--clips", str(clips), "--photos", str(photos), "--out", str(out)]) == 3
    )  # no overwrite


def test_a_local_transformers_vision_model_can_be_the_encoder(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    vit_dir = tmp_path / "vit"
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
        )
    ).save_pretrained(vit_dir)
    eyes = Eyes(encoder_dir=vit_dir)
    frames = np.stack([random_still("heldout", i, random.Random(i))[0] for i in range(3)])
    emb = eyes.embed(frames)
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    photos = write_person_folder(3, tmp_path / "photos", 4)
    write_person_clip(3, tmp_path / "clips" / "c.mp4")
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "--clips",
                str(tmp_path / "clips"),
                "--photos",
                str(photos),
                "--encoder",
                str(vit_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["clips"][0]["people"][0]["identity"] is not None
