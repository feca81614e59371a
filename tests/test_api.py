"""The Python API as docs/api.md shows it: each function called twice in one interpreter, a
LoRA applied to a pipeline the caller passes, and ``--init-from`` describing the adapter it
trained."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors import safe_open

from cameo.models import load_pipeline
from conftest import train_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from cameo.data.world_folders import write_person_folder

    return write_person_folder(4, tmp_path_factory.mktemp("api") / "photos", 6)


def test_every_api_function_twice_in_a_fresh_interpreter(photos, tiny_pipeline_dir, tmp_path):
    """``cameo.train`` and ``cameo.generate`` are functions; no submodule import may replace
    them after the first call. A fresh interpreter, because the import order matters."""
    script = textwrap.dedent(
        f"""
        import json, cameo
        base, out = {str(tiny_pipeline_dir)!r}, {str(tmp_path)!r}
        small = dict(base=base, steps=2, batch=2, rank=4, alpha=4, validate_every=-1,
                     log_with="none")
        loras = [cameo.train({str(photos)!r}, trigger="mike", name=f"mike{{i}}",
                             out=f"{{out}}/run{{i}}", **small) for i in range(2)]
        clips = [cameo.generate("mike, smiling", base=base, lora=[f"{{loras[0]}}:0.8"],
                                frames=5, height=32, width=32, steps=2, seed=i,
                                out=f"{{out}}/clip{{i}}.mp4") for i in range(2)]
        covs = [cameo.convert(loras[0], f"{{out}}/comfy{{i}}.safetensors", to="comfyui")
                for i in range(2)]
        reports = [cameo.evaluate(clips=out, photos={str(photos)!r}) for _ in range(2)]
        print(json.dumps({{"loras": [str(p) for p in loras],
                          "clips": [list(c.shape) for c in clips],
                          "keys": [c.keys_out for c in covs],
                          "summaries": [sorted(r["summary"]) for r in reports]}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert [p.rsplit("/", 1)[1] for p in got["loras"]] == ["mike0.safetensors", "mike1.safetensors"]
    assert got["clips"] == [[5, 32, 32, 3]] * 2
    assert got["keys"][0] == got["keys"][1] > 0
    assert got["summaries"][0] == got["summaries"][1] and got["summaries"][0]


def test_generate_applies_the_lora_to_a_given_pipe_and_leaves_it_as_given(
    photos, tiny_pipeline_dir, tmp_path
):
    import cameo

    lora = cameo.train(
        photos, trigger="mike", name="mike", out=str(tmp_path / "run"),
        base=str(tiny_pipeline_dir), steps=6, batch=2, rank=4, alpha=4, lr=5e-2,
        validate_every=-1, log_with="none",
    )  # fmt: skip
    clip = dict(base=str(tiny_pipeline_dir), frames=5, height=32, width=32, steps=3, seed=3)
    own = cameo.generate("mike, smiling", lora=[f"{lora}:1.0"], **clip)
    pipe = load_pipeline(tiny_pipeline_dir)
    plain = cameo.generate("mike, smiling", pipe=pipe, **clip)
    given = cameo.generate("mike, smiling", pipe=pipe, lora=[f"{lora}:1.0"], **clip)
    again = cameo.generate("mike, smiling", pipe=pipe, **clip)
    assert np.abs(own.astype(int) - plain.astype(int)).max() > 2  # the LoRA changes the clip
    assert np.abs(given.astype(int) - own.astype(int)).max() <= 1  # ... on a given pipe too
    assert np.array_equal(again, plain)  # and is gone afterwards
    assert not getattr(pipe.transformer, "peft_config", {})  # no adapter left behind


def test_init_from_writes_the_loaded_adapters_rank_and_alpha(photos, tiny_pipeline_dir, tmp_path):
    from cameo.training import run_training

    first = run_training(
        train_config(photos, tiny_pipeline_dir, tmp_path / "a", rank=2, alpha=8, steps=2),
        log=lambda *_: None,
    )
    # the flags say rank 4, alpha 4; the adapter that trains is the file's rank 2, alpha 8
    cfg = train_config(
        photos, tiny_pipeline_dir, tmp_path / "b", rank=4, alpha=4, steps=2, init_from=str(first)
    )
    second = run_training(cfg, log=lambda *_: None)
    with safe_open(str(second), "pt") as f:
        meta = f.metadata()
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    spec = json.loads(meta["cameo.lora_spec"])
    assert (spec["rank"], spec["alpha"]) == (2, 8.0)
    peft = json.loads(meta["lora_adapter_metadata"])
    assert peft["transformer.r"] == 2 and peft["transformer.lora_alpha"] == 8
    assert all(s[0] == 2 for k, s in shapes.items() if "lora_A" in k)
    written = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (written["lora"]["rank"], written["lora"]["alpha"]) == (2, 8.0)
