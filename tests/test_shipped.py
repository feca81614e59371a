"""Smoke test of what cameo ships: cameo-tiny loads in a plain Python session with stock
diffusers (no cameo import) and renders a clip; the eyes load."""

import subprocess
import sys

from cameo.models import tiny_model_dir

PLAIN = """
import sys, numpy as np
from diffusers import WanPipeline
pipe = WanPipeline.from_pretrained(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
v = pipe("Ada Lovette, speaking, in front of a green wall", height=64, width=64, num_frames=17,
         num_inference_steps=4, max_sequence_length=64, output_type="np").frames[0]
assert v.shape == (17, 64, 64, 3), v.shape
assert v.std() > 0.05
print("ok", type(pipe.text_encoder).__name__, pipe.transformer.config.num_layers)
"""


def test_shipped_model_loads_in_plain_diffusers():
    path = tiny_model_dir()
    r = subprocess.run(
        [sys.executable, "-c", PLAIN, str(path)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ok BertModel")


def test_shipped_weights_are_small_fp16_with_a_model_card():
    from safetensors import safe_open

    path = tiny_model_dir()
    total = 0
    for f in list(path.glob("*/*.safetensors")) + list(
        (path.parent / "eyes").glob("*.safetensors")
    ):
        if f.parent.name == "text_encoder":
            continue
        total += f.stat().st_size
        with safe_open(str(f), "pt") as h:
            assert all(str(h.get_slice(k).get_dtype()) in ("F16", "I64") for k in h.keys()), f  # noqa: SIM118 (safe_open is not a dict)
    assert total < 40 * 2**20
    card = (path / "README.md").read_text()
    assert "cameo pretrain" in card and "seed" in card
    assert "python recipes/train_eyes.py" in (path.parent / "eyes" / "README.md").read_text()
