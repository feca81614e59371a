"""The dataset reader on messy folders: every bad file gets a line, nothing raises but too few."""

import io
import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from cameo import faces
from cameo.data import DatasetError, apply_trigger, read_image, scan_folder
from cameo.data.world_folders import write_person_clip, write_person_folder


def _face(seed: int, size=(80, 60), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    arr[: size[1] // 3, : size[0] // 3] = [255, 0, 0]  # a marker in the top-left corner
    return Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)


def _good(folder, n=4, start=0):
    for i in range(n):
        _face(100 + start + i).save(folder / f"good{start + i}.png")
        (folder / f"good{start + i}.txt").write_text(f"a man with short red hair, photo {i}")


def test_bad_files_get_reasons_and_good_ones_are_used(tmp_path):
    _good(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a jpeg")
    buf = io.BytesIO()
    _face(1).save(buf, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _face(2, (8, 8)).save(tmp_path / "tiny.png")
    (tmp_path / "notes.doc").write_text("x")
    (tmp_path / "zdup.png").write_bytes((tmp_path / "good0.png").read_bytes())
    (tmp_path / "orphan.txt").write_text("caption without an image")
    r = scan_folder(tmp_path, "mike")
    status = dict(r.lines)
    assert r.usable == 4
    assert status["empty.png"] == "skipped: empty file"
    assert status["text.jpg"].startswith("skipped: not a readable image")
    assert status["truncated.png"].startswith("skipped: not a readable image")
    assert status["tiny.png"].startswith("skipped: too small")
    assert status["notes.doc"] == "skipped: not an image or clip"
    assert status["zdup.png"] == "skipped: exact duplicate of good0.png"
    assert any("orphan.txt" in w for w in r.warnings)
    assert "4 usable" in r.format()


def test_image_modes_are_converted(tmp_path):
    _face(3).convert("CMYK").save(tmp_path / "cmyk.jpg")
    _face(4).convert("P").save(tmp_path / "palette.png")
    rgba = _face(5).convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white
    rgba.save(tmp_path / "alpha.png")
    arr16 = (np.linspace(0, 65535, 80 * 60).reshape(60, 80)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    r = scan_folder(tmp_path, "mike", min_usable=4)
    by = {i.path.name: i for i in r.items}
    assert set(by) == {"cmyk.jpg", "palette.png", "alpha.png", "deep.png"}
    for item in by.values():  # 4:3 photos go to the 80x48 bucket of a 64x64 base
        assert item.frames.shape == (1, 48, 80, 3) and item.frames.dtype == np.uint8
    assert (by["alpha.png"].frames == 255).all()
    assert "composited on white" in by["alpha.png"].note
    assert by["deep.png"].frames.std() > 10  # the 16-bit gradient survives


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_respected(tmp_path, orientation):
    # A tall image whose marker sits top-left once displayed; stored so that EXIF must rotate it.
    shown = np.zeros((96, 64, 3), np.uint8)
    shown[:20, :20] = [255, 0, 0]
    img = Image.fromarray(shown)
    inverse = {
        1: None,
        2: Image.FLIP_LEFT_RIGHT,
        3: Image.ROTATE_180,
        4: Image.FLIP_TOP_BOTTOM,
        5: Image.TRANSPOSE,
        6: Image.ROTATE_90,
        7: Image.TRANSVERSE,
        8: Image.ROTATE_270,
    }[orientation]
    stored = img.transpose(inverse) if inverse is not None else img
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, exif=exif, quality=95)
    frames, _ = read_image(path, 64, 64)
    # The upright 64x96 photo goes to the 48x80 bucket, its centre crop keeping the full height
    # and columns 3..61: the marker is at the top-left.
    assert frames.shape == (1, 80, 48, 3)
    assert frames[0, :2, :2, 0].mean() > 200 and frames[0, :2, :2, 1].mean() < 60
    assert frames[0, -10:, -10:].mean() < 30


def test_absurd_sizes_are_refused_without_decoding(tmp_path):
    bomb = Image.new("1", (20000, 15000))  # 300 Mpx, a few KB on disk
    bomb.save(tmp_path / "bomb.png")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="absurd size: 20000x15000"):
        read_image(tmp_path / "bomb.png", 64, 64)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, never decoded


def test_captions_from_txt_metadata_templates_and_encodings(tmp_path):
    for i in range(5):
        _face(10 + i).save(tmp_path / f"p{i}.png")
    (tmp_path / "p0.txt").write_text("[trigger] smiling in front of a red wall")
    (tmp_path / "p1.txt").write_bytes("caf\xe9 photo".encode("latin-1"))
    (tmp_path / "p2.txt").write_text("   ")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "p3.png", "text": "a woman, speaking"}) + "\n"
    )
    r = scan_folder(tmp_path, "mike")
    cap = {i.path.name: (i.caption, i.note) for i in r.items}
    assert cap["p0.png"][0] == "mike smiling in front of a red wall"
    assert cap["p1.png"][0] == "mike, café photo" and "Latin-1" in cap["p1.png"][1]
    assert cap["p2.png"][0] == "a photo of mike" and "empty caption" in cap["p2.png"][1]
    assert cap["p3.png"][0] == "mike, a woman, speaking"
    assert cap["p4.png"][0] == "a photo of mike" and "no caption" in cap["p4.png"][1]


def test_near_duplicates_are_reported(tmp_path):
    _good(tmp_path)
    img = Image.open(tmp_path / "good1.png")
    arr = np.asarray(img).copy()
    arr[0, 0] = [0, 0, 0]  # one pixel changed
    Image.fromarray(arr).save(tmp_path / "z_near.png")
    r = scan_folder(tmp_path, "mike")
    assert "near duplicate of good1.png" in dict(r.lines)["z_near.png"]


def test_a_clip_shorter_than_a_window_gives_the_longest_4k_plus_1_at_the_base_rate(tmp_path):
    import imageio.v3 as iio

    frames = np.stack([np.asarray(_face(i, (64, 64))) for i in range(11)])
    iio.imwrite(tmp_path / "c.gif", frames, duration=100, loop=0)  # 1 s at 10 fps
    _good(tmp_path, 3)
    r = scan_folder(tmp_path, "mike")
    clip = next(i for i in r.items if i.path.name == "c.gif")
    # 1 s holds 9 frames at cameo-tiny's 8 fps (not all 11 squeezed in)
    assert clip.frames.shape == (9, 64, 64, 3)
    assert "11 frames at 10 fps -> 1 window of 9 at 8 fps" in clip.note


def test_too_few_usable_is_an_error_listing_reasons(tmp_path):
    _good(tmp_path, 2)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="only 2 usable") as e:
        scan_folder(tmp_path, "mike")
    assert "bad.png: skipped" in str(e.value)


def test_apply_trigger():
    assert apply_trigger("a photo of [trigger] smiling", "mike") == "a photo of mike smiling"
    assert apply_trigger("a man", "mike") == "mike, a man"
    assert apply_trigger("mike, a man", "mike") == "mike, a man"


@pytest.mark.parametrize("use_faces", [False, True])
def test_world_folders_load_exactly_as_before(tmp_path, use_faces):
    """The built-in model's folders go through untouched, so its batches and results do not
    move: its 64x64 PNGs are the one 64x64 bucket, uncropped, pixel for pixel; a world clip
    (17 frames at 8 fps, 256x256) gives all its frames, each Lanczos-resized as before."""
    import imageio.v3 as iio

    if use_faces and not faces.available():
        pytest.skip("needs the faces extra")
    folder = write_person_folder(3, tmp_path / "photos", 4)
    clip = write_person_clip(3, tmp_path / "clip" / "clip.mp4", scene_seed=1)
    for p in (clip[0], clip[-1]):  # the MP4 and its caption
        shutil.copy(p, folder / p.name)
    r = scan_folder(folder, "mike", faces=use_faces)
    assert [i.path.name for i in r.items] == ["clip.mp4", *(f"photo_{i:03d}.png" for i in range(4))]
    for item in r.items:
        if item.path.suffix == ".png":
            expected = np.asarray(Image.open(item.path).convert("RGB"))[None]
        else:
            decoded = iio.imread(item.path, index=None)  # (17, 256, 256, 3)
            expected = np.stack(
                [np.asarray(Image.fromarray(f).resize((64, 64), Image.LANCZOS)) for f in decoded]
            )
        assert item.frames.dtype == np.uint8 and np.array_equal(item.frames, expected)
