"""Validation during training: fixed-seed previews scored against the training photos."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..data.media import save_clip_outputs
from ..generation import GenerateConfig, generate_frames
from ..metrics.evaluate import Eyes, default_prompts, score_clip, summarise, to_model_size
from ..metrics.scores import self_similarity
from .cache import encoders_on
from .objective import unwrap_model

if TYPE_CHECKING:
    from .trainer import Trainer


class Validator:
    """Fixed-seed previews scored by cameo's eyes against the training photos."""

    def __init__(self, trainer: Trainer):

        self.trainer = trainer
        try:
            self.eyes = Eyes()
        except FileNotFoundError:
            self.eyes = None
            return
        photos = [i.frames[0] for i in trainer.report.items if i.frames.shape[0] == 1]

        self.refs = self.eyes.embed(to_model_size(np.stack(photos)))
        self.self_sim = self_similarity(self.refs)
        self.prompts = default_prompts(trainer.cfg.trigger)["subject"][:3]

    def run(self, step: int) -> dict | None:
        if self.eyes is None:
            return None

        t = self.trainer
        model = unwrap_model(t.model)
        model.eval()
        with encoders_on(t.pipe, t.acc.device):
            recs = self._previews(step)
        model.train()
        return summarise(recs)

    def _previews(self, step: int) -> list[dict]:

        t, recs = self.trainer, []
        for k, prompt in enumerate(self.prompts):
            gen = GenerateConfig(prompt=prompt, seed=k, height=t.cfg.height, width=t.cfg.width)
            frames = generate_frames(t.pipe, gen)
            recs.append(score_clip(self.eyes, frames, prompt, self.refs, self.self_sim))
            save_clip_outputs(
                frames,
                t.out / "previews" / f"step{step:05d}-{k}.mp4",
                overwrite=True,
                meta={"prompt": prompt, "step": step},
            )
        return recs
