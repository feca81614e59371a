"""What a person sees: sharpness, visible speech and the face judge on the world's renders."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cameo import faces
from cameo.metrics.sharpness import laplacian_energy, sharpness_ratio
from cameo.metrics.stills import random_still
from cameo.world import person_sample
from cameo.world.traits import Scene


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def _clip(person: int, action: str, frames: int = 9) -> np.ndarray:
    rng = random.Random(f"test/speech/{person}/0")
    scene = Scene.sample(rng).replace(action=action, hat="none")
    return person_sample("heldout", person, rng, scene=scene, frames=frames).frames


def test_sharpness_ranks_blur_below_the_original():
    still = random_still("heldout", 7, random.Random("test/sharp"))[0]  # (64, 64, 3)
    sharp = laplacian_energy(still)
    soft, softer = laplacian_energy(_blur(still, 0.7)), laplacian_energy(_blur(still, 2.0))
    assert sharp > soft > softer
    assert softer < 0.25 * sharp  # a 2 px Gaussian keeps little fine detail
    assert sharpness_ratio([_blur(still, 2.0)[None]], [still[None]]) == pytest.approx(
        softer / sharp
    )


def test_speech_separates_a_speaking_clip_from_a_silent_one():
    from cameo.metrics.evaluate import Eyes
    from cameo.metrics.speech import mouth_range, speech_visible

    eyes = Eyes()
    speaking = [mouth_range(eyes, _clip(3, "speaking"))]
    silent = [mouth_range(eyes, _clip(3, "silent"))]
    assert min(speaking) > eyes.speaking_threshold > max(silent)
    assert speech_visible(speaking, eyes.speaking_threshold) == 1.0
    assert speech_visible(silent, eyes.speaking_threshold) == 0.0


@pytest.mark.skipif(not faces.available(), reason="needs the faces extra")
def test_face_judge_identifies_a_world_person_among_a_few():
    from cameo.metrics.face_lineup import FaceLineup, person_descriptor

    def stills(person: int) -> np.ndarray:  # (4, 64, 64, 3)
        rng = random.Random(f"test/faces/{person}")
        return np.stack([random_still("heldout", person, rng)[0] for _ in range(4)])

    # persons whose stills show a face the detector finds (it misses about half of them)
    lineup = FaceLineup.from_stills(lambda: np.stack([stills(p) for p in (47, 48, 49)]))
    assert lineup.size == 4
    person = person_descriptor(stills(42))
    assert person is not None
    judged = lineup.judge(person, _clip(42, "silent", frames=5), step=1)
    assert judged["face_found"] > 0 and judged["identified"]
    assert lineup.judge(person, _clip(47, "silent", frames=5), step=1)["identified"] is False
