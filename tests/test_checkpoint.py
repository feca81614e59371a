import torch

from cameo.training import checkpoint as ckpt


def test_save_load_round_trip_and_prune(tmp_path):
    w = {"a": torch.randn(3, 2)}
    opt = {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    for step in (1, 2, 3):
        ckpt.save(tmp_path, step, w, {"rng": ckpt.rng_state()}, opt, keep=2)
    names = [p.name for p in ckpt.complete_checkpoints(tmp_path)]
    assert names == ["step-0000002", "step-0000003"]
    tensors, state, optim = ckpt.load(ckpt.latest(tmp_path))
    assert torch.equal(tensors["a"], w["a"]) and state["step"] == 3
    assert torch.equal(optim["state"][0]["exp_avg"], torch.ones(2))


def test_incomplete_checkpoint_is_never_latest(tmp_path):
    ckpt.save(tmp_path, 1, {"a": torch.zeros(1)}, {"rng": ckpt.rng_state()})
    broken = tmp_path / "step-0000009"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"half a file")
    assert ckpt.latest(tmp_path).name == "step-0000001"
    try:
        ckpt.load(broken)
    except FileNotFoundError as e:
        assert "COMPLETE" in str(e)
    else:
        raise AssertionError("an incomplete checkpoint loaded")


def test_rng_state_restores_the_stream():
    state = ckpt.rng_state()
    a = torch.rand(4)
    ckpt.set_rng_state(state)
    assert torch.equal(a, torch.rand(4))
