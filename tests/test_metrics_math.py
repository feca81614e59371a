"""Metric arithmetic on synthetic embeddings and prompt parsing: no trained model needed."""

import pytest
import torch
import torch.nn.functional as F

from cameo.metrics.nets import PROBE_CLASSES
from cameo.metrics.scores import (
    centroid,
    frame_similarity,
    identification_rank,
    prompt_attributes,
    prompt_fidelity,
    self_similarity,
    split_regions,
    temporal_consistency,
)
from cameo.metrics.train_eyes import class_weights, parse_head_weights, probe_loss
from cameo.metrics.validate import roc_auc


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_similarity_and_self_similarity():
    refs = _unit([1, 0.1, 0], [1, -0.1, 0], [1, 0, 0.1])
    frames = _unit([1, 0, 0], [0, 1, 0])
    sims = frame_similarity(frames, refs)
    assert sims[0] > 0.99 and abs(sims[1]) < 0.05
    assert 0.98 < self_similarity(refs) < 1.0
    assert self_similarity(refs[:1]) == 1.0


def test_identification_rank_counts_better_impostors():
    gallery = _unit([1, 0, 0], [0, 1, 0], [0.9, 0.1, 0])
    assert identification_rank(torch.tensor([1.0, 0.0, 0.0]), gallery, subject=0) == 0
    assert identification_rank(torch.tensor([0.8, 0.2, 0.0]), gallery, subject=0) == 1
    assert identification_rank(torch.tensor([0.0, 1.0, 0.0]), gallery, subject=0) == 2


def test_temporal_consistency_detects_drift():
    steady = _unit([1, 0], [1, 0.01], [1, 0.0])
    drifting = _unit([1, 0], [0, 1], [-1, 0])
    assert temporal_consistency(steady) > 0.99
    assert temporal_consistency(drifting) < 0.01
    assert torch.allclose(centroid(_unit([1, 0], [0, 1])), _unit([1, 1])[0])


def test_roc_auc_extremes():
    import numpy as np

    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True])) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([False, False, True, True])) == 0.0


def test_prompt_attributes_parsing():
    a = prompt_attributes(
        "a man with short curly red hair and round glasses, speaking, in front of a green wall"
    )
    assert a == {"hair": "red", "glasses": "round", "speaking": True, "background": "green"}
    b = prompt_attributes("Ada Lovette in a blue beanie, not speaking, in a room with teal walls")
    assert b == {"hat": "beanie", "speaking": False, "background": "teal"}
    c = prompt_attributes(
        "a woman with a pink bob, no glasses, against an orange striped background"
    )
    assert c["hair"] == "pink" and c["glasses"] == "none" and c["background"] == "orange"
    assert prompt_attributes("mike") == {}


def test_two_person_prompts_split_by_region():
    p = (
        "two people side by side in front of a blue wall: on the left a man with short black hair talking, "
        "on the right a woman with long blonde hair silent"
    )
    left, right = split_regions(p)
    assert (
        prompt_attributes(left)["hair"] == "black" and prompt_attributes(left)["speaking"] is True
    )
    assert (
        prompt_attributes(right)["hair"] == "blonde"
        and prompt_attributes(right)["speaking"] is False
    )
    assert prompt_attributes(left)["background"] == "blue"
    assert prompt_attributes(p)["people"] == 2
    assert split_regions("a man") is None


def test_prompt_fidelity_fraction():
    assert (
        prompt_fidelity({"hair": "red", "speaking": True}, {"hair": "red", "speaking": False})
        == 0.5
    )
    assert prompt_fidelity({}, {"hair": "red"}) is None


def test_class_weights_favour_rare_classes_and_average_one():
    base = {"hair": 0, "background": 0, "glasses": 0, "hat": 0, "people": 0}
    hats = [0] * 80 + [1] * 5 + [2] * 5 + [3] * 10
    labels = [dict(base, hat=h) for h in hats] + [dict(base, hair=-100)] * 5
    w = class_weights(labels, 0.5)
    assert set(w) == set(PROBE_CLASSES)
    assert w["hat"].shape == (len(PROBE_CLASSES["hat"]),)
    assert w["hat"][3] / w["hat"][0] == pytest.approx((85 / 10) ** 0.5, rel=1e-5)
    assert w["hat"][1] > w["hat"][3] > w["hat"][0]
    freq = torch.tensor([85, 5, 5, 10]) / 105
    assert float((freq * w["hat"]).sum()) == pytest.approx(1.0, rel=1e-5)
    # bald (-100) rows are not counted; an absent class is weighed as if seen once
    assert w["hair"][1] / w["hair"][0] == pytest.approx(100**0.5, rel=1e-5)
    assert torch.allclose(class_weights(labels, 0.0)["hat"], torch.ones(4))


def test_head_weights_parse_and_reject_unknown_heads():
    assert parse_head_weights("mouth=8, yaw=16,hat=2") == {"mouth": 8.0, "yaw": 16.0, "hat": 2.0}
    assert parse_head_weights("") == {}
    with pytest.raises(ValueError):
        parse_head_weights("moustache=3")


def test_probe_loss_weights_heads_and_classes():
    out = {"hat": torch.tensor([[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]), "yaw": torch.zeros(2)}
    labels = [{"hat": 0, "yaw": 0.5}, {"hat": 3, "yaw": -0.5}]
    ce = F.cross_entropy(out["hat"], torch.tensor([0, 3]), reduction="none")
    plain = probe_loss(out, labels, ["hat", "yaw"])
    assert float(plain) == pytest.approx(float(ce.mean()) + 4.0 * 0.25, rel=1e-5)
    heavy = probe_loss(out, labels, ["hat", "yaw"], weights={"hat": 2.0, "yaw": 1.0})
    assert float(heavy) == pytest.approx(2 * float(ce.mean()) + 0.25, rel=1e-5)
    balance = {"hat": torch.tensor([1.0, 1.0, 1.0, 3.0])}
    balanced = probe_loss(out, labels, ["hat"], balance=balance)
    assert float(balanced) == pytest.approx(float((ce[0] + 3 * ce[1]) / 4), rel=1e-5)


def test_scoring_and_generation_read_two_person_prompts_alike():
    """A region is scored on the very words generation gave it; a form whose side's words come
    before 'on the left' is read by neither (each would otherwise get the other's words)."""
    from cameo.generation import auto_region_prompts

    p = "two people in front of a red wall: on the left mike speaking, on the right anna silent"
    assert split_regions(p) == (
        "mike speaking, in front of a red wall",
        "anna silent, in front of a red wall",
    )
    assert [t.split("=", 1)[1] for t in auto_region_prompts(p)] == list(split_regions(p))
    swapped = "mike speaking on the right and anna silent on the left"
    assert split_regions(swapped) is None and auto_region_prompts(swapped) is None
