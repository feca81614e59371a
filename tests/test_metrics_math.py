"""Metric arithmetic on synthetic embeddings and prompt parsing: no trained model needed."""

import torch
import torch.nn.functional as F

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
