"""Identity on real faces: ``cameo eval --identity face`` and face-judged training validation.

Real pictures from scikit-image: ``data.astronaut()`` (a 512x512 portrait of Eileen Collins)
is the subject; ``data.lfw_subset()`` (25x25 faces of other people) are the strangers. Clips
are 9-frame MP4s of a photo with small shifts and brightness changes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cameo
from cameo import faces
from cameo.cli import main
from cameo.data.media import save_clip_outputs
from cameo.data.world_folders import write_person_folder
from cameo.metrics.face_identity import FaceJudge, photos_look_real
from cameo.metrics.judges import resolve_identity
from cameo.metrics.prompts import validation_prompts
from cameo.models import TINY_DIR
from cameo.training import Trainer, validation
from cameo.training.loop import Events
from cameo.ui.tasks import metrics_rows
from conftest import train_config

if not faces.available():
    pytest.skip("needs the faces extra: pip install 'cameo-lora[faces]'", allow_module_level=True)
data = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra)")
img_as_ubyte = pytest.importorskip("skimage.util").img_as_ubyte

FRAMES = 9
# LFW faces (of the first 100, the faces half) whose face dlib's HOG detector finds
STRANGERS = (0, 1, 2, 3)


def astronaut_clip(astronaut: np.ndarray, phase: int) -> np.ndarray:
    """(9, 304, 304, 3): the head and shoulders, the window drifting, the light changing.
    (The crop leaves out the mission patch lower down, which HOG takes for a second face.)"""
    out = []
    for i in range(FRAMES):
        left, top = 90 + 3 * i + phase, 4 + 2 * i
        window = astronaut[top : top + 304, left : left + 304].astype(np.float32)
        out.append(np.clip(window * (0.85 + 0.04 * i), 0, 255).astype(np.uint8))
    return np.stack(out)


def stranger_clip(face: np.ndarray) -> np.ndarray:
    """(9, 224, 224, 3): a 25x25 grey LFW face enlarged to 150 px on a grey canvas, drifting."""
    big = np.asarray(Image.fromarray(face).resize((150, 150), Image.Resampling.BICUBIC))
    out = []
    for i in range(FRAMES):
        canvas = np.full((224, 224), 128, np.uint8)
        left, top = 30 + 2 * i, 34 + i
        canvas[top : top + 150, left : left + 150] = np.clip(big * (0.9 + 0.025 * i), 0, 255)
        out.append(np.repeat(canvas[:, :, None], 3, axis=2))
    return np.stack(out)


def reference_photos(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    """Four photos of the astronaut: crops, a mirror image, brighter, heavily compressed."""
    head = astronaut[0:330, 40:480]
    return {
        "ref-0.png": head,
        "ref-1.png": np.ascontiguousarray(head[:, ::-1]),
        "ref-2.jpg": np.clip(astronaut[0:300, 100:420] * 1.2, 0, 255).astype(np.uint8),
        "ref-3.jpg": astronaut[10:330, 60:440],
    }


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def lfw() -> np.ndarray:
    return img_as_ubyte(data.lfw_subset()[:100])  # (100, 25, 25) uint8 grey


@pytest.fixture(scope="module")
def refs(astronaut, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    for name, image in reference_photos(astronaut).items():
        Image.fromarray(image).save(folder / name, quality=40 if name.endswith("3.jpg") else 90)
    return folder


@pytest.fixture(scope="module")
def clips(astronaut, lfw, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for k in range(2):
        meta = {"prompt": "mike, a close-up portrait, speaking to the camera"}
        save_clip_outputs(
            astronaut_clip(astronaut, 4 * k), folder / f"astronaut-{k}.mp4", meta=meta
        )
    for k in STRANGERS:
        meta = {"prompt": "a stranger, a close-up portrait"}
        save_clip_outputs(stranger_clip(lfw[k]), folder / f"lfw-{k:02d}.mp4", meta=meta)
    return folder


@pytest.fixture(scope="module")
def face_report(clips, refs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "face.json"
    argv = ["eval", "--clips", str(clips), "--photos", str(refs), "--identity", "face"]
    assert main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def by_clip(report: dict) -> dict[str, dict]:
    return {c["file"].split(".")[0]: c["people"][0] for c in report["clips"]}


def test_eval_face_scores_the_astronaut_above_other_faces(face_report, capsys):
    assert face_report["identity_judge"] == "face"
    assert face_report["references"]["used"] == ["ref-0.png", "ref-1.png", "ref-2.jpg", "ref-3.jpg"]
    recs = by_clip(face_report)
    assert len(recs) == 2 + len(STRANGERS)  # one record per clip stem (mp4 and gif written)
    mine = [r for name, r in recs.items() if name.startswith("astronaut")]
    others = [r for name, r in recs.items() if name.startswith("lfw")]
    for r in mine + others:
        assert r["face_found"] == 1.0, r  # every frame's face is found at native resolution
        assert len(r["distance_per_frame"]) == FRAMES
        assert r["prompt_fidelity"] is None
        assert "identified" not in r  # no line-up of cartoon people
    sim = lambda rs: [r["similarity_normalised"] for r in rs]  # noqa: E731
    assert min(sim(mine)) > max(sim(others)) + 0.3, (sim(mine), sim(others))
    assert min(sim(mine)) > 0.8
    assert [r["same_person"] for r in mine] == [1.0, 1.0]
    assert max(r["same_person"] for r in others) <= 0.2
    assert all(r["distance"] < faces.SAME_PERSON_DISTANCE for r in mine)
    assert face_report["prompt_fidelity"] is None and face_report["prompt_fidelity_note"]
    s = face_report["summary"]
    assert s["identity_judge"] == "face" and s["clips"] == 6 and "prompt_fidelity" not in s


def test_eval_face_table_shows_face_numbers(clips, refs, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["eval", "--clips", str(clips), "--photos", str(refs), "--identity", "face"]
    assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "same person" in table and "face found" in table and "identity (norm.)" not in table
    assert "summary (face judge)" in table and "prompt fidelity: not measured" in table


def test_auto_judges_real_photos_by_face_and_world_renders_by_eye(clips, refs, tmp_path):
    report = cameo.evaluate(clips=clips, photos=refs)  # identity="auto"
    assert report["identity_judge"] == "face"
    world = write_person_folder(5, tmp_path / "world", 4)
    assert photos_look_real(refs) and not photos_look_real(world)
    assert resolve_identity("auto", photos=world, clips=True) == "world"
    assert resolve_identity("auto", photos=None, clips=True) == "world"


def test_auto_picks_world_for_cameo_tiny_and_face_for_other_bases(tiny_pipeline_dir):
    for tiny in (None, "cameo-tiny", str(TINY_DIR)):
        assert resolve_identity("auto", base=tiny) == "world"
    assert resolve_identity("auto", base=str(tiny_pipeline_dir)) == "face"
    assert resolve_identity("world", base=str(tiny_pipeline_dir)) == "world"
    assert resolve_identity("face", base=None) == "face"
    assert resolve_identity("auto", base=str(tiny_pipeline_dir), encoder=True) == "world"
    with pytest.raises(ValueError, match="identity must be"):
        resolve_identity("eyes")


def test_face_leakage_is_same_person_share_lora_minus_base():
    judge = FaceJudge(None)
    leak = judge.leakage({"same_person": 0.25}, {"same_person": 0.05})
    assert leak["leakage"] == pytest.approx(0.2)
    assert (leak["leakage_lora"], leak["leakage_base"]) == (0.25, 0.05)
    assert judge.leakage({"face_found": 0.0}, {"same_person": 0.0}) == {}


def test_validation_prompts_per_base_and_from_a_file(tmp_path):
    real = validation_prompts("mike", tiny=False)
    assert len(real) == 3 and all("mike" in p and "[trigger]" not in p for p in real)
    assert validation_prompts("mike", tiny=True)[0] == "mike, speaking, in front of a blue wall"
    f = tmp_path / "p.txt"
    f.write_text("# mine\n[trigger] on a boat\n\nportrait of [trigger], studio light\n")
    assert validation_prompts("mike", tiny=False, path=f) == [
        "mike on a boat",
        "portrait of mike, studio light",
    ]


# ------------------------------------------------------------ validation during training


@pytest.fixture(scope="module")
def astronaut_photos(astronaut, tmp_path_factory):
    """Training photos of the astronaut, captioned."""
    folder = tmp_path_factory.mktemp("train") / "photos"
    folder.mkdir()
    for name, image in reference_photos(astronaut).items():
        Image.fromarray(image).save(folder / name)
        (folder / name).with_suffix(".txt").write_text("mike, a woman in a spacesuit")
    return folder


def run(photos, base, out, **overrides):
    log, seen = [], []
    events = Events(on_validation=[lambda step, m: seen.append((step, m))])
    cfg = train_config(photos, base, out, steps=4, validate_every=2, **overrides)
    lora = Trainer(cfg, log=log.append, events=events).train()
    return lora, log, seen


def test_training_validates_with_the_face_judge(astronaut_photos, tiny_pipeline_dir, tmp_path):
    """auto on a non-cameo-tiny base: the face judge; noise previews show no face, so no step
    is a best-checkpoint candidate and the last step's LoRA is written."""
    out = tmp_path / "run"
    lora, log, seen = run(astronaut_photos, tiny_pipeline_dir, out)
    assert [s for s, _ in seen] == [2, 4]
    for _, m in seen:
        assert m["identity_judge"] == "face" and m["clips"] == 3
        assert m["face_found"] == 0.0 and "identity_normalised" not in m
    assert sum("found no face in the previews" in line for line in log) == 2
    assert lora.exists() and not (out / "mike-last.safetensors").exists()
    assert json.loads((out / "metrics.json").read_text())["best_step"] == 4
    assert len(list((out / "previews").glob("step*.mp4"))) == 6
    prompt = json.loads((out / "previews" / "step00002-0.json").read_text())["prompt"]
    assert prompt == "mike, a close-up portrait, speaking to the camera, natural light"


def test_face_judge_picks_the_best_checkpoint(
    astronaut_photos, astronaut, lfw, tiny_pipeline_dir, tmp_path, monkeypatch
):
    """Previews showing the astronaut at step 2 and a stranger at step 4: step 2 is kept.
    (The references are the training photos at the training size, 64 px here, so the
    astronaut scores about 0.73 and a stranger about 0.30; at native size 1.05 and 0.10.)"""
    calls = []

    def fake_frames(pipe, gen, image=None):
        assert image is None  # a text-to-video base: no first frame
        calls.append(gen.prompt)
        return astronaut_clip(astronaut, 0) if len(calls) <= 3 else stranger_clip(lfw[0])

    monkeypatch.setattr(validation, "generate_frames", fake_frames)
    out = tmp_path / "run"
    _, log, seen = run(astronaut_photos, tiny_pipeline_dir, out)
    first, second = (m for _, m in seen)
    assert first["same_person"] == 1.0 and first["identity_normalised"] > 0.6
    assert second["same_person"] <= 0.2
    assert second["identity_normalised"] < first["identity_normalised"] - 0.3
    assert json.loads((out / "metrics.json").read_text())["best_step"] == 2
    assert (out / "mike-last.safetensors").exists()
    assert any("face judge" in line for line in log)


def test_missing_face_extra_turns_selection_off(
    astronaut_photos, tiny_pipeline_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(faces, "available", lambda: False)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("[trigger] on a boat\n[trigger] in the rain\n")
    out = tmp_path / "run"
    lora, log, seen = run(astronaut_photos, tiny_pipeline_dir, out, sample_prompts=str(prompts))
    off = [line for line in log if "best-checkpoint selection is off" in line]
    assert len(off) == 1 and "pip install 'cameo-lora[faces]'" in off[0]
    assert seen == [] and lora.exists()
    assert json.loads((out / "metrics.json").read_text())["best_step"] == 4
    previews = sorted((out / "previews").glob("step*.json"))
    assert [json.loads(p.read_text())["prompt"] for p in previews[:2]] == [
        "mike on a boat",
        "mike in the rain",
    ]
    assert len(previews) == 4  # two prompts at steps 2 and 4


def test_eval_lora_on_a_real_base_uses_the_face_judge(
    astronaut_photos, refs, tiny_pipeline_dir, tmp_path, capsys
):
    """auto on a non-cameo-tiny base: face numbers, leakage as a same-person share, no prompt
    fidelity. (Noise from a random base shows no face: every share is 0.)"""
    lora = Trainer(
        train_config(astronaut_photos, tiny_pipeline_dir, tmp_path / "l", steps=2)
    ).train()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("[trigger] on a boat\n# others\na man on a boat\n")
    out = tmp_path / "eval.json"
    argv = ["eval", "--lora", str(lora), "--photos", str(refs), "--base", str(tiny_pipeline_dir)]
    assert main([*argv, "--prompts", str(prompts), "--seeds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["identity_judge"] == "face" and report["prompt_fidelity"] is None
    assert report["clips"]["subject"]["lora"][0]["prompt"] == "mike on a boat"
    s = report["summary"]
    assert (
        s["subject"]["lora"]["face_found"] == 0.0 and "prompt_fidelity" not in s["subject"]["lora"]
    )
    assert s["leakage"] == 0.0 and (s["leakage_lora"], s["leakage_base"]) == (0.0, 0.0)
    table = capsys.readouterr().out
    assert "leakage (frames on prompts not naming mike where the face judge sees mike" in table
    (lora.parent / "eval.json").write_text(out.read_text())
    rows = metrics_rows(lora.parent)  # the web app's Results table reads the same report
    assert rows[-1][0].startswith("leakage") and rows[-1][2] == "+0.000"
