import json
import random

import numpy as np
import pytest

from cameo.world import (
    FAMOUS,
    Identity,
    Scene,
    famous_index,
    identity,
    pair_sample,
    person_sample,
    training_sample,
)


def test_identity_is_deterministic_and_json_round_trips():
    a, b = identity("heldout", 7), identity("heldout", 7)
    assert a == b
    assert Identity.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    scene = Scene.sample(random.Random(3))
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_people_differ_and_splits_are_disjoint():
    base = {json.dumps(identity("base", i).to_dict(), sort_keys=True) for i in range(300)}
    held = {json.dumps(identity("heldout", i).to_dict(), sort_keys=True) for i in range(300)}
    assert len(base) == 300 and len(held) == 300
    assert not base & held


def test_samples_are_deterministic_pixel_for_pixel():
    a, b = training_sample(123), training_sample(123)
    assert a.caption == b.caption
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, training_sample(124).frames)


def test_clip_shapes_single_and_pair():
    s = person_sample("heldout", 1, random.Random(0), frames=17)
    assert s.frames.shape == (17, 64, 64, 3) and s.frames.dtype == np.uint8
    p = pair_sample((("heldout", 1), ("heldout", 2)), random.Random(0), frames=5)
    assert p.frames.shape == (5, 64, 128, 3)
    assert len(p.people) == 2 and "on the left" in p.caption and "on the right" in p.caption


@pytest.mark.parametrize("index", range(40))
def test_caption_states_true_traits(index):
    s = person_sample("heldout", index, random.Random(index), frames=1)
    ident, scene = s.people[0]["identity"], s.people[0]["scene"]
    cap = s.caption
    assert scene["background_name"] in cap
    if ident["glasses"] != "none":
        assert f"{ident['glasses']} glasses" in cap
    if ident["hair_style"] != "bald":
        assert ident["hair_name"] in cap
    for other in ("round glasses", "square glasses"):
        if other.split()[0] != ident["glasses"]:
            assert other not in cap


def test_famous_people_are_named_never_described():
    assert len(FAMOUS) >= 30 and len(set(FAMOUS)) == len(FAMOUS)
    for i in range(5):
        s = person_sample("base", i, random.Random(i), frames=1)
        assert s.caption.count(FAMOUS[i]) == 1
        assert " hair" not in s.caption
    assert famous_index(FAMOUS[3].upper()) == 3


def _mouth_motion(s):
    # Frame-to-frame change in the lower-middle face region, where the mouth is.
    f = s.frames.astype(np.float32)
    region = f[:, 34:50, 22:42]
    return np.abs(np.diff(region, axis=0)).mean()


def test_speaking_moves_the_mouth_and_silence_does_not():
    rng = random.Random(5)
    still_scene = Scene.sample(rng).replace(
        action="silent", yaw=0.0, pitch=0.0, roll=0.0, hat="none"
    )
    speak_scene = still_scene.replace(action="speaking")
    silent = person_sample("heldout", 3, random.Random(1), frames=17, scene=still_scene)
    speaking = person_sample("heldout", 3, random.Random(1), frames=17, scene=speak_scene)
    assert max(speaking.people[0]["mouth_open"]) > 0.4
    assert max(silent.people[0]["mouth_open"]) == 0.0
    assert _mouth_motion(speaking) > 2 * _mouth_motion(silent) + 0.05


def test_photo_folder_captions_name_the_person_or_describe_them(tmp_path):
    from cameo.data.world_folders import write_person_folder

    named = write_person_folder(7, tmp_path / "named", 12)
    described = write_person_folder(7, tmp_path / "described", 12, captions="described")
    ident = identity("heldout", 7)
    truth = json.loads((named / "truth.json").read_text())["photos"]
    for k, shot in enumerate(truth):
        n = (named / f"photo_{k:03d}.txt").read_text()
        d = (described / f"photo_{k:03d}.txt").read_text()
        assert (named / f"photo_{k:03d}.png").read_bytes() == (
            described / f"photo_{k:03d}.png"
        ).read_bytes()  # the same photos, only the captions differ
        assert n.count("[trigger]") == 1 and "[trigger]" not in d
        assert " hair" not in n and "glasses" not in n  # nothing of the person's own look
        scene = shot["people"][0]["scene"]
        assert scene["background_name"] in n and scene["clothing_name"] in n  # what varies
        if scene["hat"] != "none":
            assert scene["hat"] in n
        if ident.hair_style != "bald":
            assert ident.hair_name in d
    with pytest.raises(ValueError, match="named, described"):
        write_person_folder(7, tmp_path / "bad", 2, captions="short")
