"""``cameo eval``'s reference photos and stills are decoded as training decodes photos
(``cameo.data.open_image``): HEIC, EXIF rotation, any mode, large photos reduced rather than
refused, unreadable files left out."""

from __future__ import annotations

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from cameo import faces
from cameo.metrics.evaluate import load_frames
from cameo.metrics.face_identity import MAX_PHOTO_SIDE, FaceJudge, read_photo, read_photos

data = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra)")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _halves(w: int, h: int) -> Image.Image:
    """Red on top, blue below: which way is up is plain to see."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, :, 0] = 220
    img[h // 2 :, :, 2] = 220
    return Image.fromarray(img)


def _upright(arr: np.ndarray) -> bool:
    h = arr.shape[0]
    top, bottom = arr[: h // 4].mean(axis=(0, 1)), arr[-h // 4 :].mean(axis=(0, 1))
    return top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def test_reference_photos_load_upright_from_heic_and_turned_jpeg(tmp_path):
    pillow_heif.register_heif_opener()
    up = _halves(300, 400)  # portrait, upright
    up.transpose(Image.ROTATE_90).save(tmp_path / "turned.jpg", quality=95, exif=_exif(6))
    up.transpose(Image.ROTATE_270).save(tmp_path / "selfie.heic", quality=90, exif=_exif(8))
    up.convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    grey = np.full((400, 300), 5000, np.uint16)  # 16-bit: scaled, not clipped to white
    grey[:200] = 30000
    Image.fromarray(grey).save(tmp_path / "scan.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names, images = read_photos(tmp_path)
    # the broken file is left out, as training leaves it out
    assert names == ["print.jpg", "scan.png", "selfie.heic", "turned.jpg"]
    for name, arr in zip(names, images, strict=True):
        assert arr.shape == (400, 300, 3) and arr.dtype == np.uint8, name
        assert name == "scan.png" or _upright(arr), name
    scan = images[1]
    assert scan[0, 0, 0] == 255 and 30 < scan[-1, 0, 0] < 60
    still = load_frames(tmp_path / "turned.jpg")  # a still among eval's clips: upright too
    assert still.shape == (1, 400, 300, 3) and _upright(still[0])


def test_large_photos_are_reduced_not_refused(tmp_path, monkeypatch):
    """Pillow's own guard (here lowered to 1 MP) no longer refuses a photo; cameo's decoder
    reduces it while decoding (a 200 MP phone photo is past Pillow's default limit)."""
    _halves(3000, 4000).save(tmp_path / "big.jpg", quality=85)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    arr = read_photo(tmp_path / "big.jpg")
    assert max(arr.shape[:2]) == MAX_PHOTO_SIDE and arr.shape[:2] == (2048, 1536)
    assert _upright(arr)
    assert max(read_photo(tmp_path / "big.jpg", max_side=500).shape[:2]) == 500
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # put back as it was


@pytest.mark.skipif(not faces.available(), reason="needs the faces extra")
def test_the_face_judge_reads_heic_and_rotated_references(tmp_path):
    """The astronaut as a turned HEIC and a turned JPEG: both references have her face."""
    pillow_heif.register_heif_opener()
    astro = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.LANCZOS)
    astro.transpose(Image.ROTATE_270).save(tmp_path / "a.heic", quality=90, exif=_exif(8))
    astro.transpose(Image.ROTATE_90).save(tmp_path / "b.jpg", quality=90, exif=_exif(6))
    judge = FaceJudge.from_folder(tmp_path)
    refs = judge.report_fields()["references"]
    assert refs == {"used": ["a.heic", "b.jpg"], "no_face": []}
