"""The CLI as a user meets it: files written, clear refusals, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest

from cameo.cli import main
from cameo.cli import ui as cli_ui
from cameo.data.media import write_mp4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cameo.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_world_person_writes_a_captioned_folder_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "mike"
    assert main(["world", "person", "--seed", "4", "--out", str(out), "--count", "6"]) == 0
    pngs, txts = sorted(out.glob("*.png")), sorted(out.glob("*.txt"))
    assert len(pngs) == 6 and [p.stem for p in pngs] == [t.stem for t in txts]
    assert all(t.read_text().strip() for t in txts)
    before = pngs[0].read_bytes()
    r = run_cli("world", "person", "--seed", "5", "--out", str(out), "--count", "2")
    assert r.returncode == 3 and "Traceback" not in r.stderr and "--overwrite" in r.stderr
    assert pngs[0].read_bytes() == before


def test_world_clip_writes_video_files(tmp_path):
    assert (
        main(["world", "clip", "--seed", "2", "--out", str(tmp_path / "c.mp4"), "--frames", "9"])
        == 0
    )
    for suffix in (".mp4", ".gif", ".png", ".txt", ".json"):
        assert (tmp_path / f"c{suffix}").stat().st_size > 0


def test_generate_writes_mp4_gif_sheet(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    code = main(
        [
            "generate",
            "a man with short black hair, speaking, in front of a green wall",
            "--base",
            str(tiny_pipeline_dir),
            "--out",
            str(out),
            "--frames",
            "5",
            "--height",
            "32",
            "--width",
            "32",
            "--steps",
            "2",
        ]
    )
    assert code == 0

    video = iio.imread(out)
    assert video.shape[0] == 5 and video.shape[-1] == 3
    assert out.with_suffix(".gif").exists() and out.with_suffix(".png").exists()
    assert not list(Path(tmp_path).glob(".*partial*"))


def test_user_errors_give_one_line_and_an_exit_code(tmp_path):
    r = run_cli("generate", "a man", "--frames", "4", "--out", str(tmp_path / "x.mp4"))
    assert r.returncode == 2 and "4k+1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "generate", "a man", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "x.mp4")
    )
    assert r.returncode == 2 and "model_index.json" in r.stderr and "Traceback" not in r.stderr


def test_demo_refuses_a_negative_person_before_writing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--person", "-1"]) == 2
    assert "--person" in capsys.readouterr().err
    assert not out.exists()


def test_mp4_of_odd_width_is_padded_not_resized(tmp_path):
    frames = np.zeros((5, 64, 130, 3), np.uint8)  # 130 * 4 = 520 px, not a multiple of 16
    frames[:, :, -1] = 200  # the last column must survive, not be resampled away
    write_mp4(frames, tmp_path / "odd.mp4", 8)
    first = imageio.get_reader(str(tmp_path / "odd.mp4")).get_data(0)
    assert first.shape == (256, 528, 3)
    assert abs(int(first[128, 516:520].mean()) - 200) < 20  # the original pixels, at 4x
    assert first[128, 524:].mean() > 240  # then white padding (a resize would smear it grey)


def test_missing_input_files_are_named_in_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope.safetensors")
    for argv in (
        ["convert", missing, str(tmp_path / "out.safetensors"), "--to", "kohya"],
        ["inspect", missing],
        ["resize", missing, "--rank", "2", "--out", str(tmp_path / "small.safetensors")],
        ["eyes", "recalibrate", "--probe", missing, "--counter", missing, "--bank", missing],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{missing} does not exist" in err, err
    assert not list(tmp_path.iterdir())


def test_study_and_eyes_training_are_recipes_not_commands(capsys):
    for argv in (["study"], ["eyes", "train"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_ui_without_gradio_or_a_free_port_says_so(monkeypatch, capsys):
    def no_gradio(**_):
        raise ModuleNotFoundError("No module named 'gradio'", name="gradio")

    def port_taken(**_):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(cli_ui, "launch", no_gradio)
    assert main(["ui"]) == 2
    assert "needs gradio" in capsys.readouterr().err
    monkeypatch.setattr(cli_ui, "launch", port_taken)
    assert main(["ui", "--port", "7861"]) == 2
    assert "try --port" in capsys.readouterr().err
