"""Phone photos in: HEIC, EXIF rotation, 48 MP, group shots, blur and clips, on real faces.

The folder is built here from scikit-image's real photographs, as a phone would make it:
``data.astronaut()`` (the subject, her face at (175, 76, 266, 167) in the 512x512 original,
dlib's HOG box) enlarged into 3024x4032 portraits with the face in the upper third, stored
turned with EXIF orientation 6 (JPEG) or 8 (HEIC); a 16:9 group shot with two larger faces
from ``data.lfw_subset()`` beside her; a 48 MP photo; a blurred copy; someone else alone; a
6-second 30 fps MOV.
"""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pillow_heif
import pytest
import torch
from PIL import Image, ImageFilter

from cameo import faces
from cameo.cli import main
from cameo.data import (
    Target,
    check_photos,
    make_buckets,
    open_image,
    scan_folder,
    target_for_base,
    training_target,
)
from cameo.data.buckets import (
    WORLD_TARGET,
    contains,
    crop_for,
    frame_photo,
    overlaps,
)
from cameo.data.clips import clip_windows
from cameo.data.images import decode_side
from cameo.models.profiles import detect_profile
from conftest import train_config
from test_real_wan import wan21_dir  # noqa: F401  (the tiny UMT5 Wan 2.1 fixture)

data = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra)")
needs_faces = pytest.mark.skipif(
    not faces.available(), reason="needs the faces extra: pip install 'cameo-lora[faces]'"
)

ASTRONAUT_FACE = (175, 76, 266, 167)
WAN_480P = Target(480, 832, 33, 16.0)  # Wan 2.1/2.2 at 480p: 33-frame clips at 16 fps


def _backdrop(w: int, h: int, seed: int) -> Image.Image:
    small = np.random.default_rng(seed).integers(60, 200, (4, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def _paste(canvas: Image.Image, img: Image.Image, scale: float, at, mirrored=False) -> tuple:
    """Paste ``img`` enlarged ``scale`` times at ``at``; the astronaut's face box there."""
    canvas.paste(img.resize((round(img.width * scale), round(img.height * scale))), at)
    left, top, right, bottom = ASTRONAUT_FACE
    if mirrored:
        left, right = img.width - right, img.width - left
    return tuple(a + v * scale for a, v in zip(at * 2, (left, top, right, bottom), strict=True))


def _lfw(i: int, size: int) -> Image.Image:
    grey = (data.lfw_subset()[i] * 255).astype(np.uint8)  # float [0, 1], 25x25
    return Image.fromarray(grey).resize((size, size), Image.BICUBIC).convert("RGB")


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    """(folder, upright face box of the astronaut in each photo)."""
    folder = tmp_path_factory.mktemp("phone")
    astro = Image.fromarray(data.astronaut())
    truth = {}
    up = _backdrop(3024, 4032, 1)  # stored turned; EXIF 6 turns it upright
    truth["portrait.jpg"] = _paste(up, astro, 4, (488, 200))
    up.transpose(Image.ROTATE_90).save(folder / "portrait.jpg", quality=90, exif=_exif(6))
    up.filter(ImageFilter.GaussianBlur(6)).save(folder / "blurred.jpg", quality=90)
    truth["blurred.jpg"] = truth["portrait.jpg"]
    selfie = _backdrop(3024, 4032, 2)
    truth["selfie.heic"] = _paste(
        selfie, astro.transpose(Image.FLIP_LEFT_RIGHT), 3.5, (700, 150), mirrored=True
    )
    pillow_heif.register_heif_opener()
    selfie.transpose(Image.ROTATE_270).save(
        folder / "selfie.heic", quality=80, exif=_exif(8).tobytes()
    )
    group = _backdrop(3840, 2160, 3)  # 16:9, two larger faces of other people beside her
    truth["group.jpg"] = _paste(group, astro, 2.0, (1408, 400))
    group.paste(_lfw(0, 560), (150, 700))
    group.paste(_lfw(3, 560), (3130, 700))
    group.save(folder / "group.jpg", quality=90)
    big = _backdrop(8000, 6000, 4)  # 48 MP
    truth["big.jpg"] = _paste(big, astro, 5, (2700, 800))
    big.save(folder / "big.jpg", quality=85)
    square = _backdrop(1200, 1200, 5)
    truth["square.png"] = _paste(square, astro, 1.8, (150, 100))
    square.save(folder / "square.png")
    other = _backdrop(900, 1200, 6)
    other.paste(_lfw(20, 500), (200, 200))
    other.save(folder / "stranger.webp", quality=90)
    with imageio.get_writer(folder / "clip.mov", format="FFMPEG", fps=30, quality=7) as w:
        for i in range(180):  # 6 s; the astronaut drifts right
            frame = _backdrop(640, 368, 7)
            _paste(frame, astro, 0.6, (200 + i // 6, 40))
            w.append_data(np.asarray(frame))
    (folder / "portrait.txt").write_text("[trigger] smiling in front of a wall")
    (folder / "selfie.txt").write_text("[trigger], a man with short brown hair and blue eyes")
    (folder / "group.txt").write_text("[trigger] with friends at a party")
    return folder, truth


@pytest.fixture(scope="module")
def checked(phone):
    """The photo check of the phone folder for a Wan 480p base."""
    return check_photos(phone[0], trigger="mike", target=WAN_480P)


def _entry(report, name):
    return next(e for e in report.entries if e.file == name)


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


@needs_faces
def test_each_photo_loads_upright_with_the_face_where_it_is_shown(phone, checked):
    _, truth = phone
    sizes = {"portrait.jpg": (3024, 4032), "selfie.heic": (3024, 4032), "big.jpg": (8000, 6000)}
    for name, face in truth.items():
        e = _entry(checked, name)
        assert e.used, (name, e.reason)
        if name in sizes:
            assert e.size == sizes[name]
        subject = e.faces[e.subject]
        assert _iou(subject, face) > 0.6, (name, subject, face)
        assert contains(e.crop, subject), (name, e.crop, subject)


def test_large_photos_are_reduced_while_decoding(phone):
    folder, _ = phone
    side = decode_side(480, 832)  # 1664
    big = open_image(folder / "big.jpg", side)  # JPEG: decoded at 1/4 by the DCT
    assert big.size == (8000, 6000) and big.reduced_by == "draft 1/4"
    assert big.image.size == (2000, 1500)
    heic = open_image(folder / "selfie.heic", side)  # HEIC: upright, then halved
    assert heic.size == (3024, 4032) and heic.reduced_by == "reduce 2"
    assert heic.image.size == (1512, 2016)


@needs_faces
def test_every_crop_in_every_bucket_keeps_the_face_whole(checked):
    for e in checked.entries:
        if not e.used or e.subject is None:
            continue
        face = e.faces[e.subject]
        others = [f for i, f in enumerate(e.faces) if i != e.subject]
        for target in (WORLD_TARGET, WAN_480P, Target(720, 1280)):
            for b in target.buckets():
                for avoid in ([], others):
                    crop = crop_for(e.size, b, face, avoid)
                    if crop is None:
                        continue
                    assert contains(crop, face), (e.file, b, crop, face)
                    assert min(crop[:2]) >= 0
                    assert crop[2] <= e.size[0] + 1e-6 and crop[3] <= e.size[1] + 1e-6
                    assert abs((crop[2] - crop[0]) / (crop[3] - crop[1]) - b.aspect) < 1e-6
                    assert not any(overlaps(crop, o) for o in avoid)


@needs_faces
def test_the_group_shot_warns_and_is_cropped_to_the_subject(phone, checked):
    e = _entry(checked, "group.jpg")
    assert len(e.faces) == 3 and "several_faces" in e.codes
    subject = e.faces[e.subject]
    assert e.subject != 0  # the others' faces are larger: chosen by who the folder shows
    assert _iou(subject, phone[1]["group.jpg"]) > 0.6
    assert contains(e.crop, subject)
    others = [f for i, f in enumerate(e.faces) if i != e.subject]
    assert not any(overlaps(e.crop, o) for o in others) and "others_in_crop" not in e.codes


def test_a_face_no_crop_can_separate_is_kept_and_flagged():
    """Cheek to cheek: no crop holds the subject's face without part of the other's."""
    keep, other = (450, 100, 550, 200), (380, 120, 470, 210)
    framing = frame_photo((1000, 500), make_buckets(64, 64), keep, [other])
    assert framing.others_in_crop and contains(framing.crop, keep)
    alone = frame_photo((1000, 500), make_buckets(64, 64), keep, [(700, 100, 800, 200)])
    assert not alone.others_in_crop and not overlaps(alone.crop, (700, 100, 800, 200))


@needs_faces
def test_the_blurred_copy_and_someone_else_are_flagged(checked):
    assert "blurry" in _entry(checked, "blurred.jpg").codes
    assert "other_person" in _entry(checked, "stranger.webp").codes
    for name in ("portrait.jpg", "selfie.heic", "big.jpg", "group.jpg", "square.png"):
        e = _entry(checked, name)
        assert "blurry" not in e.codes and "other_person" not in e.codes, (name, e.warnings)
        assert e.identity_distance < faces.SAME_PERSON_DISTANCE


def test_captions_missing_or_describing_the_look_are_flagged(phone):
    report = check_photos(phone[0], trigger="mike", faces=False)
    look = _entry(report, "selfie.heic")
    assert "caption_look" in look.codes
    assert "brown hair" in look.warnings[look.codes.index("caption_look")].message
    assert "caption_missing" in _entry(report, "big.jpg").codes
    assert not {"caption_look", "caption_missing"} & set(_entry(report, "portrait.jpg").codes)
    assert _entry(report, "portrait.jpg").caption == "mike smiling in front of a wall"


def test_clip_windows_follow_the_base_clip_length_and_frame_rate(phone, tmp_path):
    # 6 s at 30 fps for cameo-tiny (17 frames at 8 fps, 2 s): two windows, 3.75 frames apart
    windows = clip_windows(180, 30.0, 17, 8.0)
    assert len(windows) == 2 and all(len(w) == 17 for w in windows)
    assert windows[0][-1] - windows[0][0] == 60 and set(np.diff(windows[0])) == {3, 4}
    assert windows[1][-1] == 179  # evenly spaced: the last window ends with the clip
    assert clip_windows(17, 8.0, 17, 8.0) == [list(range(17))]  # a world clip: all of it
    assert [len(w) for w in clip_windows(180, 30.0, 33, 16.0)] == [33, 33]  # Wan: 2 s each
    assert [len(w) for w in clip_windows(180, 30.0, 81, 16.0)] == [81]  # 5 s of 6
    assert [len(w) for w in clip_windows(45, 30.0, 81, 16.0)] == [21]  # 1.5 s: 4k+1 at 16 fps
    shutil.copy(phone[0] / "clip.mov", tmp_path / "clip.mov")
    for target, shape in ((WORLD_TARGET, [17, 17]), (Target(64, 64, 5, 4.0), [5, 5, 5, 5])):
        report = scan_folder(tmp_path, "mike", target=target, min_usable=1, faces=False)
        assert [i.frames.shape[0] for i in report.items] == shape
        assert report.photos.entries[0].windows == len(shape)


def test_cli_photos_writes_json_and_exits_by_usable_count(phone, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["photos", str(phone[0]), "--trigger", "mike", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["usable"] == 8 and report["enough"] and report["buckets"]
    keys = {"file", "used", "reason", "size", "faces", "subject", "crop", "bucket", "warnings"}
    for e in report["photos"]:
        assert keys <= set(e) and e["used"]
        assert e["bucket"] in report["buckets"]
    blurred = next(e for e in report["photos"] if e["file"] == "blurred.jpg")
    assert "blurry" in [w["code"] for w in blurred["warnings"]]
    few = tmp_path / "few"
    few.mkdir()
    for name in ("portrait.jpg", "square.png"):
        shutil.copy(phone[0] / name, few / name)
    assert main(["photos", str(few), "--json", str(tmp_path / "few.json")]) == 2
    assert "training needs at least 4" in capsys.readouterr().out


def test_without_the_faces_extra_photos_are_centre_cropped_with_a_note(
    phone, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(faces, "available", lambda: False)
    folder = tmp_path / "p"
    folder.mkdir()
    for name in ("square.png", "stranger.webp", "portrait.jpg", "blurred.jpg"):
        shutil.copy(phone[0] / name, folder / name)
    assert main(["photos", str(folder)]) == 0
    out = capsys.readouterr()
    assert "cameo-lora[faces]" in out.out and "Traceback" not in out.err
    report = scan_folder(folder, "mike")
    assert not report.photos.faces_checked and "cameo-lora[faces]" in report.photos.notes[0]
    for e in report.photos.entries:  # centred crops, no faces looked for
        assert e.faces == [] and "no_face" not in e.codes
        w, h = e.size
        assert abs((e.crop[0] + e.crop[2]) - w) <= 2 and abs((e.crop[1] + e.crop[3]) - h) <= 2


def test_buckets_keep_the_area_in_multiples_of_16():
    assert [str(b) for b in make_buckets(64, 64)] == ["48x80", "64x64", "80x48"]
    buckets = make_buckets(480, 832)
    assert {"832x480", "480x832", "544x720", "720x544"} <= {str(b) for b in buckets}
    for b in buckets:
        assert b.height % 16 == 0 and b.width % 16 == 0 and 0.5 <= b.aspect <= 2
        assert 0.95 * 480 * 832 <= b.height * b.width <= 480 * 832
    assert target_for_base("cameo-tiny") == WORLD_TARGET


def test_photos_too_small_for_the_base_are_skipped_with_the_reason(tmp_path):
    Image.fromarray(data.astronaut()).resize((300, 300)).save(tmp_path / "small.png")
    Image.fromarray(data.astronaut()).save(tmp_path / "ok.png")
    report = scan_folder(tmp_path, "mike", target=WAN_480P, min_usable=0, faces=False)
    status = dict(report.lines)
    assert status["small.png"].startswith("skipped: too small for 832x480 training: 300x300")
    assert status["ok.png"].startswith("used")  # 512 px: enlarged 1.25x into 640x624


def test_cache_groups_by_bucket_and_a_batch_has_one_shape(tmp_path, tiny_pipeline_dir):
    from cameo.models import load_pipeline
    from cameo.training.cache import build_cache
    from cameo.training.objective import make_batch

    astro = Image.fromarray(data.astronaut())
    for i in range(3):
        astro.rotate(5 * i).save(tmp_path / f"square{i}.png")
        astro.rotate(-5 * i - 3).resize((512, 300)).save(tmp_path / f"wide{i}.png")
    report = scan_folder(tmp_path, "mike", faces=False)
    cfg = train_config(tmp_path, tiny_pipeline_dir, tmp_path / "run", sigma_shift=2.0)
    cache = build_cache(load_pipeline(str(tiny_pipeline_dir)), report, cfg)
    # 64x64 and 80x48 buckets; the test VAE halves three times
    assert sorted(g["latents"].shape[2:] for g in cache["groups"]) == [(1, 6, 10), (1, 8, 8)]
    shapes = {make_batch(cache, cfg, s)["x0"].shape[2:] for s in range(8)}
    assert shapes == {torch.Size([1, 6, 10]), torch.Size([1, 8, 8])}


@pytest.mark.slow
@needs_faces
def test_train_on_a_wan_base_uses_buckets_at_its_resolution(phone, wan21_dir, tmp_path):  # noqa: F811
    from cameo.training import Trainer

    photos = tmp_path / "photos"  # portrait, landscape and square photos, and a 1 s clip
    photos.mkdir()
    for name in ("portrait.jpg", "portrait.txt", "group.jpg", "square.png"):
        shutil.copy(phone[0] / name, photos / name)
    astro = Image.fromarray(data.astronaut())
    with imageio.get_writer(photos / "clip.mov", format="FFMPEG", fps=30, quality=7) as w:
        for i in range(30):
            frame = _backdrop(512, 288, 8)
            _paste(frame, astro, 0.5, (150 + i, 20))
            w.append_data(np.asarray(frame))
    cfg = train_config(photos, wan21_dir, tmp_path / "run", steps=1, validate_every=-1)
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    assert cfg.min_photos <= 4
    target = training_target(wan21_dir, cfg.height, cfg.width)
    profile = detect_profile(wan21_dir)
    assert (target.frames, target.fps) == (profile.frames, profile.fps)  # Wan's clips
    report = json.loads((tmp_path / "run" / "photo_report.json").read_text())
    assert report["base"]["height"] == cfg.height and report["base"]["width"] == cfg.width
    assert report["buckets"] == [[b.width, b.height] for b in target.buckets()]
    used = {(*e["bucket"], e["frames"]) for e in report["photos"] if e["used"]}
    # the cache holds one group per shape used: latents (N, C, F', H/8, W/8), F' = (F-1)/4+1
    groups = {tuple(g["latents"].shape[2:]) for g in trainer.cache["groups"]}
    assert groups == {((f - 1) // 4 + 1, h // 8, w // 8) for w, h, f in used}
    assert (tmp_path / "run" / "photo_report.txt").read_text().startswith("photo check of")
    assert (tmp_path / "run" / "dataset_report.txt").exists()


def test_the_built_in_worlds_photos_skip_the_real_face_checks(tmp_path):
    """cameo-tiny's cartoon people are not what a real face detector finds: for its base the
    report does not warn "no face" on every photo, and says why faces were not checked."""
    from cameo.data import check_photos
    from cameo.data.world_folders import write_person_folder

    folder = write_person_folder(3, tmp_path / "world", 5)
    report = check_photos(folder, base="cameo-tiny", trigger="mike").to_dict()
    codes = {w["code"] for e in report["photos"] for w in e["warnings"]}
    assert report["usable"] == 5 and "no_face" not in codes
    assert any("cartoon faces are not checked" in n for n in report["notes"])
