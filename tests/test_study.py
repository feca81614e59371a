"""`cameo study` end to end on a tiny random pipeline: every part runs through the real
training, generation, composition and scoring code and writes its tables, JSON and plots.
The numbers themselves mean nothing here (random weights); their presence and ranges do."""

import json

import pytest
from diffusers import WanTransformer3DModel

from cameo.estimate import lora_param_count
from cameo.lora import LoraSpec
from cameo.study import StudyConfig, lora_file_stats, run_study


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
    from cameo.study_report import paired_change

    # differences 0, -0.1, -0.2: mean -0.1, sd 0.1, s.e. 0.1 / sqrt(3)
    assert paired_change([0.5, 0.4, 0.3], [0.5, 0.5, 0.5]) == "-0.100 ± 0.058"
    assert paired_change([0.6, 0.6], [0.5, 0.5]) == "+0.100 ± 0.000"
