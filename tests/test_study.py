"""The study recipe end to end on a tiny random pipeline: every part runs through the real
training, generation, composition and scoring code and writes its tables, JSON and plots.
The numbers themselves mean nothing here (random weights); their presence and ranges do.
Its full fine-tuning resumes from a checkpoint to the weights of an unbroken run."""

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file

import full_finetune
from cameo.data.world_folders import write_person_folder
from cameo.estimate import lora_param_count
from cameo.lora import LoraSpec
from cameo.training import checkpoint as ckpt
from cameo.training.loop import Events
from conftest import train_config
from study import StudyConfig, lora_file_stats, run_study
from study_report import paired_change


@pytest.mark.slow
def test_study_writes_every_part(tiny_pipeline_dir, tmp_path):
    cfg = StudyConfig(
        out=str(tmp_path / "docs"),
        work=str(tmp_path / "work"),
        base=str(tiny_pipeline_dir),
        ranks="2",
        rank=2,
        scales="0,1",
        steps=2,
        scenes=1,
        famous=2,
        lora_lrs="1e-3",
        sample_steps=2,
    )
    md = run_study(cfg)
    res = json.loads((tmp_path / "docs" / "results.json").read_text())
    (row,) = res["rank"]
    # Trainable parameters are exactly rank x (in + out) over the adapted projections.
    plain = WanTransformer3DModel.from_pretrained(tiny_pipeline_dir / "transformer")
    assert row["params"] == lora_param_count(plain, LoraSpec(rank=2)) > 0
    assert row["train_mib"] >= 0 and row["step_s"] > 0 and row["file_kib"] > 0
    for r in res["rank"] + res["scale"]:
        assert 0.0 <= r["identification"] <= 1.0 and 0.0 <= r["fidelity"] <= 1.0
    assert [r["model"] for r in res["full"]][:3] == ["base model", "LoRA r2", "LoRA r2 (lr 0.001)"]
    full = {r["model"].split(" ")[0]: r for r in res["full"]}
    assert full["full"]["trained_params"] > full["LoRA"]["trained_params"] > 0
    assert all(
        0 <= r["famous_top1"] <= 1 and -1 <= r["famous_similarity"] <= 1 for r in full.values()
    )
    methods = [r["method"] for r in res["compose"]["rows"]]
    assert methods == [
        "linear", "cat", "svd", "ties", "dare_linear", "regional",
        "orthogonal (sum)", "orthogonal + regional", "linear + regional prompts",
        "regional + regional prompts", "orthogonal + regional + regional prompts",
        "windows + regional prompts",
    ]  # fmt: skip
    rows = {r["method"]: r for r in res["compose"]["rows"]}
    # Orthogonal slots predict (near) no interference; independent LoRAs predict some.
    assert rows["orthogonal (sum)"]["predicted_interference"] < 1e-3
    assert (
        rows["linear"]["predicted_interference"]
        > rows["orthogonal (sum)"]["predicted_interference"]
    )
    text = md.read_text()
    for heading in (
        "## Rank sweep",
        "## Scale sweep",
        "## LoRA against full fine-tuning",
        "## Two people",
    ):
        assert heading in text
    for png in ("results-rank.png", "results-scale.png", "results-compose.png"):
        assert (tmp_path / "docs" / png).stat().st_size > 1000
    lora = tmp_path / "work" / "person-12" / "r2" / "mike.safetensors"  # the first person
    assert lora_file_stats(lora)["params"] == row["params"]
    # Redoing one part asks for --overwrite first, then keeps the others' tables and the run
    # that measured each.
    with pytest.raises(FileExistsError, match="scale"):
        run_study(StudyConfig(**{**cfg.__dict__, "parts": "scale"}))
    assert json.loads((tmp_path / "docs" / "results.json").read_text()) == res
    run_study(StudyConfig(**{**cfg.__dict__, "parts": "scale", "overwrite": True}))
    again = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert again["rank"] == res["rank"] and again["compose"] == res["compose"]
    assert again["runs"]["rank"] == res["runs"]["rank"]
    assert set(again["runs"]) == {"rank", "scale", "full", "compose"}
    assert "## Rank sweep" in md.read_text() and "- scale: people 12,15" in md.read_text()
    # Redoing one composition method keeps the other rows, in their order.
    windows = "windows + regional prompts"
    run_study(
        StudyConfig(**{**cfg.__dict__, "parts": "compose", "methods": windows, "overwrite": True})
    )
    third = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert [r["method"] for r in third["compose"]["rows"]] == methods
    assert third["compose"]["rows"] == res["compose"]["rows"]  # the same seeds, the same clips
    assert third["runs"]["compose"]["methods"] == windows


def test_study_refuses_bad_parts():
    with pytest.raises(ValueError, match="unknown"):
        StudyConfig(parts="rank,everything").validate()
    with pytest.raises(ValueError, match="--methods"):
        StudyConfig(methods="linear,blend").validate()
    with pytest.raises(ValueError, match="--full-lrs"):
        StudyConfig(full_lrs="0").validate()


def test_paired_change_is_the_mean_difference_with_its_standard_error():
    # differences 0, -0.1, -0.2: mean -0.1, sd 0.1, s.e. 0.1 / sqrt(3)
    assert paired_change([0.5, 0.4, 0.3], [0.5, 0.5, 0.5]) == "-0.100 ± 0.058"
    assert paired_change([0.6, 0.6], [0.5, 0.5]) == "+0.100 ± 0.000"


class Crash(Exception):
    """Stands for a kill right after a checkpoint."""


def _crash_after_step_two(step, path):
    if step == 2:
        raise Crash


def _transformer(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_full_finetune_resumes_as_if_uninterrupted(tiny_pipeline_dir, tmp_path):
    photos = write_person_folder(3, tmp_path / "photos", 6)
    flags = ["--data", str(photos), "--trigger", "mike", "--name", "mike",
             "--base", str(tiny_pipeline_dir), "--steps", "4", "--batch", "2",
             "--checkpoint-every", "2", "--lr", "1e-3"]  # fmt: skip
    assert full_finetune.main([*flags, "--out", str(tmp_path / "whole")]) == 0

    cut = tmp_path / "cut"
    cfg = train_config(photos, tiny_pipeline_dir, cut, steps=4, checkpoint_every=2, lr=1e-3)
    with pytest.raises(Crash):
        full_finetune.full_finetune(cfg, events=Events(on_checkpoint=[_crash_after_step_two]))
    assert not (cut / "transformer").exists()
    last = ckpt.latest(cut / "checkpoints")
    assert last is not None and last.name == "step-0000002"
    halfway = ckpt.load(last)[0]
    # Every weight trains from the first step: a resume that started again from the base (or
    # lost the optimiser's moments) could not end where the unbroken run does.
    base = WanTransformer3DModel.from_pretrained(tiny_pipeline_dir / "transformer").state_dict()
    assert halfway.keys() == base.keys()
    assert sum(not torch.equal(base[k], halfway[k]) for k in base) > len(base) // 2

    assert full_finetune.main([*flags, "--out", str(cut), "--resume"]) == 0
    a, b = _transformer(tmp_path / "whole"), _transformer(cut)
    assert a.keys() == b.keys() == base.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(halfway[k], b[k]) for k in b)  # the resumed run trained on
    with pytest.raises(ValueError, match="other settings"):
        full_finetune.full_finetune(
            train_config(photos, tiny_pipeline_dir, cut, steps=4, checkpoint_every=2, lr=2e-3),
            resume=True,
        )
