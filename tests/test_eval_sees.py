"""What a person sees in ``cameo eval --lora``: sharpness, visible speech, the second judge.

The measures on given clips (:mod:`cameo.metrics.sees`, :mod:`cameo.faces.mouth`), then one
evaluation of a LoRA trained for two steps on cameo-tiny, its report and its table.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cameo import faces
from cameo.cli import main
from cameo.data.world_folders import write_person_folder
from cameo.faces.mouth import mouth_opening
from cameo.metrics import evaluate, sees, world_identity
from cameo.metrics.stills import random_still
from cameo.models import TINY_DIR
from cameo.training import Trainer
from cameo.world import person_sample
from cameo.world.traits import Scene
from conftest import train_config

needs_faces = pytest.mark.skipif(not faces.available(), reason="needs the faces extra")


def _blur(clip: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(sigma))) for f in clip]
    )


def _clip(person: int, action: str, frames: int = 5) -> np.ndarray:
    rng = random.Random(f"test/sees/{person}")
    scene = Scene.sample(rng).replace(action=action, hat="none")
    return person_sample("heldout", person, rng, scene=scene, frames=frames).frames


def _stills(person: int, n: int = 4) -> np.ndarray:
    rng = random.Random(f"test/faces/{person}")
    return np.stack([random_still("heldout", person, rng)[0] for _ in range(n)])


# ------------------------------------------------------------------------------- sharpness


def test_sharpness_ratio_falls_below_one_for_a_blurred_copy():
    clips = [_clip(3, "silent"), _clip(4, "silent")]
    photos = list(_stills(3))
    prompts = ["mike, silent, in front of a blue wall"] * 2
    blurred = sees.what_a_person_sees(
        "face", [_blur(c, 1.5) for c in clips], clips, prompts, photos
    )
    assert blurred["sharpness_lora"] < 0.6 * blurred["sharpness_base"]
    assert blurred["sharpness_ratio"] == pytest.approx(
        blurred["sharpness_lora"] / blurred["sharpness_base"]
    )
    sharper = sees.what_a_person_sees(
        "face", clips, [_blur(c, 1.5) for c in clips], prompts, photos
    )
    assert sharper["sharpness_ratio"] > 1.6
    # the photos (64 px here) fitted to the frames: as sharp as renders of the same person
    assert sharper["sharpness_of_photos"] == pytest.approx(
        sharper["sharpness_lora"] / sharper["sharpness_photos"]
    )
    assert 0.5 < sharper["sharpness_of_photos"] < 2.0
    assert "speaking_clips" not in sharper and "mouth_range_lora" not in sharper  # no one speaks
    assert "face_judge" not in sharper  # no second judge asked for


def test_photos_are_fitted_to_the_frame_size_by_centre_crop():
    photo = np.zeros((100, 300, 3), np.uint8)
    photo[:, 100:200] = 255  # the centre third white
    fitted = sees.fit_photos([photo], 32, 32)
    assert fitted.shape == (1, 32, 32, 3)
    assert fitted[:, :, 1:-1].min() > 250  # the black sides cropped (Lanczos reaches one px)


# ---------------------------------------------------------------------------- mouth opening


def _face(gap: float, *, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """68 landmarks of a face whose eye centres are 10 apart and whose inner lips are ``gap``
    apart, turned by ``angle`` (radians) and scaled."""
    p = np.zeros((68, 2))
    p[36:42] = (0.0, 0.0)
    p[42:48] = (10.0, 0.0)
    p[[61, 62, 63]] = [(3.0, 12.0), (5.0, 12.0), (7.0, 12.0)]
    p[[67, 66, 65]] = [(3.0, 12.0 + gap), (5.0, 12.0 + gap), (7.0, 12.0 + gap)]
    c, s = np.cos(angle), np.sin(angle)
    return scale * p @ np.array([[c, s], [-s, c]]) + (40.0, 25.0)


def test_mouth_opening_is_the_lip_gap_over_the_eye_distance():
    assert mouth_opening(_face(0.0)) == pytest.approx(0.0)
    assert mouth_opening(_face(3.0)) == pytest.approx(0.3)
    # a tilted, nearer head reads alike
    assert mouth_opening(_face(3.0, angle=0.5, scale=2.5)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="eye centres"):
        mouth_opening(np.zeros((68, 2)))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra)")
    return data.astronaut()[0:304, 90:394]  # (304, 304, 3): head and shoulders


def _jaw_drop(face: np.ndarray, k: int, y: int = 146, x0: int = 116, x1: int = 152):
    """The face with its lower lip and chin moved ``k`` px down and the mouth's inside dark:
    an opening mouth. (Row ``y`` crosses the astronaut's lips, columns x0-x1 her mouth.)"""
    out = face.copy()
    if k:
        out[y + k :] = face[y:-k]
        out[y : y + k] = face[y]
        out[y : y + k, x0:x1] = (60, 25, 30)
    return out


@needs_faces
def test_landmark_mouth_range_grows_when_the_mouth_opens(astronaut):
    from cameo.faces.mouth import frame_openings, mouth_range

    speaking = np.stack([_jaw_drop(astronaut, k) for k in (0, 6, 12, 6, 0)])
    still = np.stack([np.roll(astronaut, k, axis=1) for k in (0, 2, 4, 2, 0)])
    openings = frame_openings(speaking)
    assert openings[2] > openings[1] > openings[0] and not np.isnan(openings).any()
    assert mouth_range(speaking) > 0.15 > 3 * mouth_range(still)
    blank = np.full((3, 64, 64, 3), 128, np.uint8)
    assert mouth_range(blank) is None  # no face in two frames: no range

    prompts = ["mike, a close-up portrait, speaking to the camera"]
    got = sees.what_a_person_sees("face", [speaking], [still], prompts, [astronaut])
    assert got["speaking_clips"] == 1
    assert got["mouth_range_ratio"] == pytest.approx(
        got["mouth_range_lora"] / got["mouth_range_base"]
    )
    assert got["mouth_range_ratio"] > 3
    assert "speech_visible_lora" not in got and "speaking_threshold" not in got


@needs_faces
def test_the_second_judge_says_when_the_photos_show_no_face():
    blank = [np.full((64, 64, 3), 90, np.uint8)] * 3
    got = sees.what_a_person_sees(
        "world",
        [_clip(3, "silent")],
        [_clip(3, "silent")],
        ["mike, silent"],
        blank,
        eyes=world_identity.Eyes(),
        second_judge=True,
    )
    assert got["face_judge"] == sees.NO_FACE_IN_PHOTOS
    assert "face_identification_lora" not in got


# ----------------------------------------------------------------- cameo eval on cameo-tiny


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """A LoRA of held-out person 3, two steps on cameo-tiny, and its 8 photos."""
    root = tmp_path_factory.mktemp("sees")
    photos = write_person_folder(3, root / "photos", 8)
    cfg = train_config(photos, TINY_DIR, root / "run", steps=2, validate_every=-1)
    return Trainer(cfg).train(), photos


@pytest.fixture
def quick_eval(monkeypatch, tmp_path):
    """Fast evaluations: 5-frame clips in 4 sampling steps, a line-up of 3 people (47-49, whose stills show a
    face dlib finds), the cache folder in tmp_path."""
    generate = evaluate.generate_frames
    monkeypatch.setattr(
        evaluate,
        "generate_frames",
        lambda pipe, cfg, image=None: generate(pipe, replace(cfg, steps=4, frames=5), image=image),
    )
    stills = np.stack([_stills(p) for p in (47, 48, 49)])
    monkeypatch.setattr(world_identity, "distractor_stills", lambda: stills)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_eval_lora_reports_what_a_person_sees(tiny_lora, quick_eval, tmp_path, capsys):
    lora, photos = tiny_lora
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("[trigger], speaking, in front of a blue wall\n")
    out = tmp_path / "eval.json"
    argv = ["eval", "--lora", str(lora), "--photos", str(photos), "--prompts", str(prompts)]
    assert main([*argv, "--seeds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["summary"]["sees"]
    assert report["identity_judge"] == "world" and s["clips"] == 1
    for key in ("sharpness_lora", "sharpness_base", "sharpness_photos"):
        assert s[key] > 0
    assert s["sharpness_ratio"] == pytest.approx(s["sharpness_lora"] / s["sharpness_base"])
    assert s["speaking_clips"] == 1 and s["speaking_threshold"] > 0
    assert s["speech_visible_lora"] in (0.0, 1.0) and s["mouth_range_base"] >= 0
    assert report["clips"]["subject"]["lora"][0]["sees"]["frame_size"] == [64, 64]
    if faces.available():
        assert s["face_judge"] == "dlib" and s["face_lineup"] == 4
        assert 0 <= s["face_found_lora"] <= 1 and s["face_identification_base"] in (0.0, 1.0)
        assert list((tmp_path / "cache" / "cameo").glob("face-lineup-v1-*.npy"))
    table = capsys.readouterr().out
    assert "sharpness (mean |Laplacian| on 1 subject clips): LoRA" in table
    assert "visible speech (mouth range by the eyes' mouth probe on 1 speaking clips)" in table
    assert ("second judge (dlib's face descriptor, line-up of 4)" in table) == faces.available()


def test_no_speech_keys_without_a_speaking_prompt(tiny_lora, quick_eval):
    lora, photos = tiny_lora
    prompts = {"subject": ["[trigger], silent, in a room with green walls"]}
    report = evaluate.eval_lora(None, lora, photos, prompts=prompts, seeds=1, second_judge=False)
    s = report["summary"]["sees"]
    assert s["sharpness_photos"] > 0 and s["sharpness_of_photos"] > 0
    assert not [k for k in s if "mouth" in k or "speech" in k or "speaking" in k]
    assert "face_judge" not in s  # the second judge left out
    table = evaluate.format_lora_table(report)
    assert "sharpness" in table and "visible speech" not in table
