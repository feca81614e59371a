"""`cameo estimate`: what the settings change in the prediction (shapes, prior preservation)."""

import json
import shutil

import pytest

from cameo.estimate import estimate, vae_spatial_factor
from cameo.lora import LoraSpec


def _est(base, **kw):
    args = dict(spec=LoraSpec(rank=4), batch=2, frames=1, height=32, width=32, matmul_tflops=1.0)
    return estimate(base, **{**args, **kw})


def test_prior_preservation_doubles_activations_and_adds_the_class_passes(tiny_pipeline_dir):
    plain, prior = _est(tiny_pipeline_dir), _est(tiny_pipeline_dir, prior_preservation=True)
    assert prior.activations_gb == pytest.approx(2 * plain.activations_gb)
    # forward + backward (2 forwards' worth), then the base's no-grad forward and the adapted
    # class-prompt pass (3 more): 5/2 of the plain step
    assert prior.flops_per_step == pytest.approx(2.5 * plain.flops_per_step)
    assert prior.weights_gb == plain.weights_gb
    # generated class samples carry their own target: no base forward, 4/2 of the plain step
    generated = _est(tiny_pipeline_dir, prior_preservation=True, prior_source="generated")
    assert generated.flops_per_step == pytest.approx(2.0 * plain.flops_per_step)
    assert generated.activations_gb == prior.activations_gb


def test_tokens_follow_the_vae_factor(tiny_pipeline_dir, tmp_path):
    assert vae_spatial_factor(tiny_pipeline_dir) == 8
    four = tmp_path / "four"
    shutil.copytree(tiny_pipeline_dir, four)
    cfg = json.loads((four / "vae" / "config.json").read_text())
    (four / "vae" / "config.json").write_text(json.dumps({**cfg, "scale_factor_spatial": 4}))
    assert _est(four).tokens_per_sample == 4 * _est(tiny_pipeline_dir).tokens_per_sample
