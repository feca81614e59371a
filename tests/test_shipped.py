"""Smoke test of what cameo ships: cameo-tiny and cameo-tiny-i2v load in a plain Python
session with stock diffusers (no cameo import) and render a clip; the eyes load."""

import subprocess
import sys

import numpy as np

from cameo.models import tiny_model_dir
from cameo.models.profiles import detect_profile
from cameo.world import training_sample, training_sample_is_pair

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


PLAIN_I2V = """
import sys, numpy as np, torch
from diffusers import WanImageToVideoPipeline
from PIL import Image
pipe = WanImageToVideoPipeline.from_pretrained(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
first = np.load(sys.argv[2])
v = pipe(image=Image.fromarray(first), prompt=sys.argv[3], height=64, width=64, num_frames=17,
         num_inference_steps=8, max_sequence_length=64, output_type="np",
         generator=torch.Generator().manual_seed(0)).frames[0]
assert v.shape == (17, 64, 64, 3), v.shape
print("ok", np.abs(v[0] - first / 255.0).mean(), v[1:].std())
"""


def test_shipped_i2v_model_continues_the_given_first_frame(tmp_path):
    """cameo-tiny-i2v (profile family cameo-tiny-i2v) animates the first frame of a world clip
    it never trained on: its generated first frame is close to the given one (mean absolute
    error under 0.1 of the pixel range, where a text-only model lands near 0.2)."""
    path = tiny_model_dir("cameo-tiny-i2v")
    profile = detect_profile(path)
    assert (profile.family, profile.task) == ("cameo-tiny-i2v", "i2v")
    i = next(i for i in range(30_000_000, 30_000_100) if not training_sample_is_pair(i))
    clip = training_sample(i, frames=17, size=64)
    np.save(tmp_path / "first.npy", clip.frames[0])
    r = subprocess.run(
        [sys.executable, "-c", PLAIN_I2V, str(path), str(tmp_path / "first.npy"), clip.caption],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _, error, motion = r.stdout.split()
    assert float(error) < 0.1 and float(motion) > 0.05


def test_shipped_weights_are_small_fp16_with_a_model_card():
    from safetensors import safe_open

    path = tiny_model_dir()
    total = 0
    i2v = tiny_model_dir("cameo-tiny-i2v")
    for f in [
        *path.glob("*/*.safetensors"),
        *i2v.glob("*/*.safetensors"),
        *(path.parent / "eyes").glob("*.safetensors"),
    ]:
        if f.parent.name == "text_encoder":
            continue
        total += f.stat().st_size
        with safe_open(str(f), "pt") as h:
            assert all(str(h.get_slice(k).get_dtype()) in ("F16", "I64") for k in h.keys()), f  # noqa: SIM118 (safe_open is not a dict)
    assert total < 40 * 2**20
    card = (path / "README.md").read_text()
    assert "cameo pretrain" in card and "seed" in card
    card = (i2v / "README.md").read_text()
    assert "cameo pretrain" in card and "--task i2v" in card and "Seed" in card
    assert "python recipes/train_eyes.py" in (path.parent / "eyes" / "README.md").read_text()
