"""Validation during training: fixed-seed previews, judged against the training photos.

The judge is the one ``--identity`` resolves to for the base (:mod:`cameo.metrics.judges`):
cameo's world eyes on cameo-tiny, the face descriptor on any other base. Its metrics carry
``identity_judge`` and ``identity_normalised``, the score the trainer keeps the best checkpoint
by. Without a judge (the faces extra missing, no face in the training photos) previews are
still written, and best-checkpoint selection is off: the last step's LoRA is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .. import faces
from ..data.media import save_clip_outputs
from ..faces import FacesUnavailable
from ..generation import GenerateConfig, generate_frames
from ..metrics.face_identity import FaceJudge
from ..metrics.judges import Judge, is_tiny_base, resolve_identity
from ..metrics.prompts import validation_prompts
from ..metrics.world_identity import Eyes, WorldJudge, to_model_size
from ..models import memory
from ..models.first_frame import is_image_to_video
from .objective import unwrap_model

if TYPE_CHECKING:
    from .trainer import Trainer

SELECTION_OFF = (
    "best-checkpoint selection is off ({why}); validation previews are still written and "
    "the last step's LoRA is the one saved"
)


def describe_validation(metrics: dict) -> str:
    """One log line for a validation's metrics (after ``step N: ``)."""
    if metrics.get("identity_judge") == "face":
        if metrics.get("identity_normalised") is None:
            return "the face judge found no face in the previews; not a best-checkpoint candidate"
        return (
            f"identity {metrics['identity_normalised']:.3f} (face judge: similarity "
            f"{metrics.get('similarity_normalised', float('nan')):.3f} normalised, same person "
            f"{metrics.get('same_person', 0.0):.2f}, face found {metrics.get('face_found', 0.0):.2f})"
        )
    score = metrics.get("identity_normalised")
    fidelity = metrics.get("prompt_fidelity")
    return (
        f"identity {'-' if score is None else format(score, '.3f')}, "
        f"prompt fidelity {'-' if fidelity is None else format(fidelity, '.2f')}"
    )


def reference_photos(trainer: Trainer) -> list[np.ndarray]:
    """The training photos as the LoRA sees them (one frame each); clips' middle frames when
    the folder holds no photos."""
    items = trainer.report.items
    photos = [i.frames[0] for i in items if i.frames.shape[0] == 1]
    return photos or [i.frames[len(i.frames) // 2] for i in items]


class Validator:
    """Fixed-seed previews of the validation prompts, judged against the training photos."""

    def __init__(self, trainer: Trainer) -> None:
        """Picks the prompts (``--sample-prompts`` or the base's) and the judge; says once
        when best-checkpoint selection is off."""
        self.trainer = trainer
        cfg = trainer.cfg
        self.prompts = validation_prompts(
            cfg.trigger, tiny=is_tiny_base(cfg.base), path=cfg.sample_prompts or None
        )
        self.judge_name = resolve_identity(cfg.identity, base=cfg.base)
        self.judge = self._make_judge()

    def _make_judge(self) -> Judge | None:
        photos = reference_photos(self.trainer)
        try:
            if self.judge_name == "face":
                if not faces.available():
                    raise FacesUnavailable("the faces extra is not installed")
                return FaceJudge.from_images(photos)
            return WorldJudge(Eyes(), to_model_size(np.stack(photos)))
        except (FacesUnavailable, FileNotFoundError, ValueError) as err:
            self.trainer.log(SELECTION_OFF.format(why=f"{self.judge_name} judge: {err}"))
            return None

    def run(self, step: int) -> dict | None:
        """Write this step's previews; their judged metrics (None without a judge)."""
        t = self.trainer
        model = unwrap_model(t.model)
        model.eval()
        with memory.encoding(t.pipe, t.acc.device, offload=t.cfg.offload):
            recs = self._previews(step)
        model.train()
        if self.judge is None:
            return None
        return {**self.judge.summarise(recs), "identity_judge": self.judge.name}

    def _previews(self, step: int) -> list[dict]:
        """Generate, save and (with a judge) score one preview per prompt. An image-to-video
        base starts each preview from a training photo, and is judged on the frames it drew
        (all but the given first)."""
        t, recs = self.trainer, []
        starts = reference_photos(t) if is_image_to_video(t.pipe) else []
        for k, prompt in enumerate(self.prompts):
            gen = GenerateConfig(prompt=prompt, seed=k, height=t.cfg.height, width=t.cfg.width)
            first = Image.fromarray(starts[k % len(starts)]) if starts else None
            frames = generate_frames(t.pipe, gen, image=first)
            if self.judge is not None:
                recs.append(self.judge.score(frames[1:] if starts else frames, prompt))
            save_clip_outputs(
                frames,
                t.out / "previews" / f"step{step:05d}-{k}.mp4",
                overwrite=True,
                meta={"prompt": prompt, "step": step},
            )
        return recs
