"""cameo train with the frozen base in float8 and offloaded block by block: the settings reach
the transformer that trains, and the adapter still learns."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cameo.data.world_folders import write_person_folder
from cameo.models import memory
from cameo.training import Trainer
from conftest import train_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("fp8", "offload"), [(True, "none"), (False, "block"), (True, "block")])
def test_training_with_fp8_storage_and_offload(tmp_path, tiny_pipeline_dir, fp8, offload):
    photos = write_person_folder(6, tmp_path / "photos", 4)
    cfg = train_config(
        photos, tiny_pipeline_dir, tmp_path / "run", steps=3, fp8_base=fp8, offload=offload
    )
    trainer = Trainer(cfg, log=lambda *_: None)
    lora = load_file(str(trainer.train()))
    model = trainer.pipe.transformer
    assert memory.is_fp8(model) == fp8
    assert memory.is_offloaded(model) == (offload != "none")
    frozen = model.blocks[0].attn1.to_q.base_layer.weight
    assert (frozen.dtype == torch.float8_e4m3fn) == fp8
    assert all(v.dtype == torch.float32 for v in lora.values())
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)  # it learned
