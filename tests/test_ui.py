"""The web app's pieces without a browser: safe names, safe zips, the job queue, sessions kept
apart, and user mistakes turned into messages. The browser test is test_ui_browser.py."""

from __future__ import annotations

import io
import stat
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cameo import faces
from cameo.ui import workspace as ws
from cameo.ui.jobs import CANCELLED, DONE, FAILED, QUEUED, STOPPED, Job, JobQueue
from cameo.ui.workspace import UploadError, extract_zip, safe_name, store_upload

needs_faces = pytest.mark.skipif(
    not faces.available(), reason="needs the faces extra: pip install 'cameo-lora[faces]'"
)

# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.png", "evil.png"),
        ("/abs/path/me.jpg", "me.jpg"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        ("", "file"),
        ("my photo (1).PNG", "my_photo_1.PNG"),
        ("été à la plage.jpg", "ete_a_la_plage.jpg"),
        ("a;rm -rf ~.txt", "a_rm_-rf.txt"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_safe_name_is_short_and_keeps_suffix():
    out = safe_name("x" * 500 + ".png")
    assert len(out) <= ws.MAX_NAME and out.endswith(".png")


def test_store_upload_cannot_escape(tmp_path):
    photos = tmp_path / "work" / "photos"
    photos.mkdir(parents=True)
    src = tmp_path / "src.png"
    src.write_bytes(b"png")
    for name in ("../../outside.png", "/etc/outside.png", "..\\outside.png"):
        store_upload(src, photos, name)
    assert not list(tmp_path.glob("outside*")) and not list((tmp_path / "work").glob("outside*"))
    assert sorted(p.name for p in photos.iterdir()) == [
        "outside-1.png",
        "outside-2.png",
        "outside.png",
    ]


def test_store_upload_ignores_other_files_and_caps_size(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    src = tmp_path / "x.exe"
    src.write_bytes(b"0" * 100)
    assert "ignored" in store_upload(src, photos)[0]
    assert not list(photos.iterdir())
    monkeypatch.setattr(ws, "MAX_FILE_BYTES", 10)
    big = tmp_path / "big.png"
    big.write_bytes(b"0" * 100)
    with pytest.raises(UploadError, match="limit"):
        store_upload(big, photos)


# -------------------------------------------------------------------------------- zips


def _zip(path: Path, entries: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:  # a symbolic link entry, as `zip --symlinks` writes it
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_is_flattened_into_the_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    z = _zip(
        tmp_path / "p.zip",
        {
            "me/a.png": b"a",
            "me/a.txt": b"caption",
            "me/deeper/b.jpg": b"b",
            "__MACOSX/me/._a.png": b"junk",
            "notes.doc": b"x",
        },
    )
    notes = extract_zip(z, photos)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "a.txt", "b.jpg"]
    assert any("notes.doc: ignored" in n for n in notes)


@pytest.mark.parametrize(
    "entries, link, match",
    [
        ({"../evil.png": b"x", "ok.png": b"y"}, None, "outside"),
        ({"/tmp/evil.png": b"x"}, None, "outside"),
        ({"a/../../evil.png": b"x"}, None, "outside"),
        ({"C:/evil.png": b"x"}, None, "outside"),
        ({"ok.png": b"y"}, "link.png", "symbolic link"),
        ({"readme.md": b"x"}, None, "no photos"),
    ],
)
def test_unsafe_zip_is_refused_whole(tmp_path, entries, link, match):
    photos = tmp_path / "photos"
    photos.mkdir()
    z = _zip(tmp_path / "bad.zip", entries, link)
    with pytest.raises(UploadError, match=match):
        extract_zip(z, photos)
    assert not list(photos.iterdir())
    assert not (tmp_path / "evil.png").exists()


def test_zip_caps_count_size_and_lying_headers(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.setattr(ws, "MAX_FILES", 3)
    many = _zip(tmp_path / "many.zip", {f"{i}.png": b"x" for i in range(5)})
    with pytest.raises(UploadError, match="limit is 3"):
        extract_zip(many, photos)
    monkeypatch.setattr(ws, "MAX_FILE_BYTES", 1000)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", b"\0" * 100_000)  # compresses to ~100 bytes
    with pytest.raises(UploadError, match="over 50 MB"):
        extract_zip(bomb, photos)
    assert not list(photos.iterdir())


def test_not_a_zip(tmp_path):
    bad = tmp_path / "photos.zip"
    bad.write_bytes(b"this is not a zip")
    (tmp_path / "photos").mkdir()
    with pytest.raises(UploadError, match="not a readable zip"):
        store_upload(bad, tmp_path / "photos")


def test_captions_are_written_only_beside_own_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"a")
    rows = [["a.png", "  mike,   smiling "], ["../x.png", "evil"], ["missing.png", "no"], [""]]
    assert ws.write_captions(photos, rows) == 1
    assert (photos / "a.txt").read_text() == "mike, smiling\n"
    assert ws.caption_rows(photos) == [["a.png", "mike, smiling"]]
    assert not (tmp_path / "x.txt").exists()


def test_sessions_are_unguessable_and_checked(tmp_path):
    a, b = ws.new_session(tmp_path), ws.new_session(tmp_path)
    assert a.id != b.id and ws.SESSION_ID.match(a.id)
    assert ws.open_session(tmp_path, a.id).photos == a.photos
    for bad in ("../" + a.id, a.id.upper(), "0" * 32, None, ""):
        with pytest.raises(UploadError):
            ws.open_session(tmp_path, bad)


# ------------------------------------------------------------------------------- queue


def _job(fn, session="s", kind="k") -> Job:
    return Job(kind, session, lambda job: fn(job))


def test_queue_runs_one_at_a_time_in_order():
    q = JobQueue()
    running, order, overlap = [], [], []
    gate = threading.Event()

    def work(job):
        running.append(job.id)
        overlap.append(len(running))
        gate.wait(5)
        order.append(job.id)
        running.remove(job.id)

    jobs = [q.submit(_job(work, session=f"s{i}")) for i in range(3)]
    deadline = time.time() + 5
    while jobs[0].state == QUEUED and time.time() < deadline:
        time.sleep(0.01)
    assert [q.position(j) for j in jobs] == [0, 2, 3]
    assert q.active("s1") is jobs[1] and q.active("s9") is None
    gate.set()
    assert all(j.wait(5) for j in jobs)
    assert order == [j.id for j in jobs] and max(overlap) == 1
    assert all(j.state == DONE for j in jobs)
    q.close()


def test_queue_cancel_and_errors():
    q = JobQueue()
    gate = threading.Event()
    first = q.submit(_job(lambda job: gate.wait(5)))
    waiting = q.submit(_job(lambda job: 1))
    q.cancel(waiting)
    assert waiting.state == CANCELLED and waiting.wait(0)
    user = q.submit(_job(lambda job: (_ for _ in ()).throw(ValueError("too few photos"))))
    bug = q.submit(_job(lambda job: {}["missing"]))
    gate.set()
    assert user.wait(5) and bug.wait(5) and first.state == DONE
    assert user.state == FAILED and user.message == "too few photos"
    assert bug.state == FAILED and bug.message.startswith("internal error (KeyError")
    q.close()


# ----------------------------------------------------------------------- the handlers


@pytest.fixture
def ui_app(tmp_path, tiny_pipeline_dir):
    from cameo.ui.app import CameoApp

    app = CameoApp(tmp_path / "work", base=str(tiny_pipeline_dir))
    yield app
    app.queue.close()


def _photos(tmp_path: Path, person: int, count: int = 6) -> list[str]:
    from cameo.data.world_folders import write_person_folder

    folder = write_person_folder(person, tmp_path / f"src{person}", count)
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix in (".png", ".txt")]


def _wait(app, sid: str, timeout: float = 120) -> Job:
    job = app._train_jobs[sid]
    assert job.wait(timeout), f"training did not finish: {job.state} {job.lines[-3:]}"
    return job


def test_user_mistakes_are_messages(ui_app, tmp_path):
    sid, _ = ui_app.start_session()
    assert ui_app.upload(sid, [], "mike")[0].startswith("**Error:** no files")
    bad = tmp_path / "photos.zip"
    bad.write_bytes(b"nope")
    assert "not a readable zip" in ui_app.upload(sid, [str(bad)], "mike")[0]
    assert "only 0 usable" in ui_app.start_train(sid, "mike", 4, 2, 2e-3, 2, 0, 0)
    assert "one word" in ui_app.start_train(sid, "two words", 4, 2, 2e-3, 2, 0, 0)
    assert "whole number" in ui_app.start_train(sid, "mike", 4, "lots", 2e-3, 2, 0, 0)
    assert "no trained LoRA" in next(ui_app.generate(sid, "mike", 1, 0, 4, None, 1, "linear"))[0]
    assert "nothing to resume" in ui_app.resume_train(sid, 4)
    assert "not valid" in ui_app.upload("../../etc", [str(bad)], "mike")[0]
    assert ui_app.poll_train(sid)[0] == "No training run yet."


@pytest.mark.slow
def test_two_sessions_are_isolated(ui_app, tmp_path):
    a, _ = ui_app.start_session()
    b, _ = ui_app.start_session()
    status_a = ui_app.upload(a, _photos(tmp_path, 1), "mike")[0]
    status_b = ui_app.upload(b, _photos(tmp_path, 2, count=5), "anna")[0]
    assert status_a.startswith("6 usable") and status_b.startswith("5 usable")
    sa, sb = ui_app.session(a), ui_app.session(b)
    assert {p.read_bytes() for p in sa.photos.glob("*.png")}.isdisjoint(
        p.read_bytes() for p in sb.photos.glob("*.png")
    )
    assert ui_app.start_train(a, "mike", 4, 2, 2e-3, 2, 0, 0).startswith(("Starting", "Wait"))
    assert ui_app.start_train(b, "anna", 4, 2, 2e-3, 2, 0, 0).startswith("Waiting")
    assert "1 job ahead" in ui_app.poll_train(b)[0]
    assert "already has a training run" in ui_app.start_train(a, "mike", 4, 2, 2e-3, 2, 0, 0)
    assert _wait(ui_app, a).state == DONE and _wait(ui_app, b).state == DONE
    assert ui_app.trained_lora(sa) == sa.run / "mike.safetensors"
    assert ui_app.trained_lora(sb) == sb.run / "anna.safetensors"
    *_, last = ui_app.generate(b, "", 1.0, 0, 4, None, 1.0, "linear")
    assert last[0].startswith("Done") and Path(last[1]).parent == sb.clips
    assert not list(sa.clips.iterdir())
    status, files = ui_app.downloads(a)
    assert status.startswith("Ready") and len(files) == 3
    assert all(Path(f).parent == sa.exports for f in files)


@pytest.mark.slow
def test_cancel_keeps_a_checkpoint_and_resume_finishes(ui_app, tmp_path):
    from cameo.ui.tasks import read_losses

    sid, _ = ui_app.start_session()
    ui_app.upload(sid, _photos(tmp_path, 3), "mike")
    ui_app.start_train(sid, "mike", 4, 500, 2e-3, 2, 0, 0)
    session = ui_app.session(sid)
    deadline = time.time() + 60
    while not read_losses(session.run) and time.time() < deadline:
        time.sleep(0.05)
    assert ui_app.cancel_train(sid).startswith("Cancelling")
    job = _wait(ui_app, sid)
    assert job.state == STOPPED and "Resume" in job.message
    assert ui_app.poll_train(sid)[0].startswith("Stopped at step")
    stopped_at = len(read_losses(session.run))
    assert (session.run / "checkpoints").is_dir()
    assert ui_app.resume_train(sid, stopped_at + 2).startswith(("Starting", "Waiting"))
    assert _wait(ui_app, sid).state == DONE
    assert [s for s, _ in read_losses(session.run)] == list(range(stopped_at + 2))
    assert ui_app.poll_train(sid)[0].startswith("Done")


def test_host_warning_and_cli():
    from cameo.cli import build_parser
    from cameo.ui.page import host_warning

    assert host_warning("127.0.0.1", 7860) is None
    assert "anyone" in host_warning("0.0.0.0", 7860)
    args = build_parser().parse_args(["ui"])
    assert (args.host, args.port, args.workdir) == ("127.0.0.1", 7860, "cameo-ui-work")


def test_zip_upload_through_the_handler(ui_app, tmp_path):
    sid, _ = ui_app.start_session()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in _photos(tmp_path, 4, count=4):
            zf.write(f, f"folder/{Path(f).name}")
    z = tmp_path / "mine.zip"
    z.write_bytes(buf.getvalue())
    status, report, table, gallery = ui_app.upload(sid, [str(z)], "mike")
    assert status.startswith("4 usable"), status
    assert "your photos" in report and str(tmp_path) not in report
    assert len(table) == 4 and gallery.count('<div class="card') == 4


def test_progress_reads_the_run_and_estimates_time(tmp_path, monkeypatch):
    from cameo.ui import tasks

    run = tmp_path / "lora"
    run.mkdir()
    losses = run / "losses.jsonl"
    job = Job("train", "s", lambda job: None, started=100.0)
    job.extra["validation"] = (2, {"identity_normalised": 0.412, "prompt_fidelity": 0.5})
    clock = iter([110.0, 120.0, 130.0])
    monkeypatch.setattr(tasks.time, "time", lambda: next(clock))

    def lines(*steps):  # a resumed run logs again the steps after its last checkpoint
        losses.write_text("".join(f'{{"step": {s}, "loss": {s / 10}}}\n' for s in steps) + "{")

    lines(0, 1)
    assert tasks.read_progress(run, 10, job).eta_s is None  # speed not known yet
    lines(0, 1, 2, 3)
    p = tasks.read_progress(run, 10, job)  # first step seen at t=120
    assert (p.step, p.eta_s, p.identity) == (4, None, 0.412)
    lines(0, 1, 2, 3, 2, 3, 4, 5)
    p = tasks.read_progress(run, 10, job)  # 2 steps in 10 s, 4 to go
    assert p.losses[-1] == (5, 0.5) and len(p.losses) == 6
    assert p.eta_s == pytest.approx(20.0) and "about 20 s left" in p.summary()


def test_two_people_read_their_own_half_of_the_prompt(ui_app, tmp_path, monkeypatch):
    sid, _ = ui_app.start_session()
    session = ui_app.session(sid)
    mine, theirs = tmp_path / "mike.safetensors", tmp_path / "anna.safetensors"
    mine.write_bytes(b"-"), theirs.write_bytes(b"-")  # only their paths are read here
    monkeypatch.setattr(ui_app, "trained_lora", lambda s: mine)
    prompt = "two people in a park: on the left mike smiling, on the right anna silent"
    args = (session, prompt, 1.0, 0, 4, str(theirs), 1.0, "linear")
    assert ui_app._generate_config(*args).region_prompt == ["auto"]
    assert ui_app._generate_config(*args, own_prompts=False).region_prompt == []
    alone = (session, prompt, 1.0, 0, 4, None, 1.0, "linear")
    assert ui_app._generate_config(*alone).region_prompt == []
    from cameo.generation import region_prompts
    from cameo.ui.page import own_prompts_choice

    # windows read their own side whatever the box says, so the box is not offered for them
    windows = ui_app._generate_config(*args[:-1], "windows", own_prompts=False)
    assert len(region_prompts(windows)) == 2
    assert own_prompts_choice("windows")["interactive"] is False
    assert own_prompts_choice("regional")["interactive"] is True


def test_a_first_frame_is_kept_in_the_session_for_image_to_video(ui_app, tmp_path, monkeypatch):
    from PIL import Image

    from cameo.ui.workspace import UploadError

    sid, _ = ui_app.start_session()
    session = ui_app.session(sid)
    mine = tmp_path / "mike.safetensors"
    mine.write_bytes(b"-")
    monkeypatch.setattr(ui_app, "trained_lora", lambda s: mine)
    photo = tmp_path / "me.png"
    Image.new("RGB", (64, 64), "red").save(photo)
    cfg = ui_app._generate_config(session, "mike", 1.0, 0, 4, None, 1.0, "linear", True, str(photo))
    assert Path(cfg.image).parent == session.uploads and Path(cfg.image).is_file()
    photo.unlink()  # the browser's temporary copy goes; the session keeps its own
    assert Path(cfg.image).is_file()
    assert ui_app._generate_config(session, "mike", 1.0, 0, 4, None, 1.0, "linear").image == ""
    with pytest.raises(UploadError):
        ui_app._generate_config(session, "mike", 1.0, 0, 4, None, 1.0, "linear", True, str(mine))


def test_training_job_shows_the_trainers_validation_events(
    tmp_path, tiny_pipeline_dir, monkeypatch
):
    """The Train tab's identity comes from the trainer's on_validation events, not its log."""
    import cameo.training.trainer as trainer_module
    from cameo.data.world_folders import write_person_folder
    from cameo.ui import tasks
    from conftest import train_config

    class FakeValidator:
        def __init__(self, trainer):
            pass

        def run(self, step):
            return {"identity_normalised": 0.25 * step, "prompt_fidelity": 1.0}

    monkeypatch.setattr(trainer_module, "Validator", FakeValidator)
    photos = write_person_folder(3, tmp_path / "photos", 4)
    cfg = train_config(photos, tiny_pipeline_dir, tmp_path / "run", steps=4, validate_every=2)
    job = Job("train", "s", tasks.train_work(cfg))
    job.result = job.work(job)
    assert job.extra["validation"] == (4, {"identity_normalised": 1.0, "prompt_fidelity": 1.0})
    assert tasks.latest_identity(job, tmp_path / "run") == (4, 1.0)


# ------------------------------------------------------------------- the photo check

ASTRONAUT_FACE = (175, 76, 266, 167)  # dlib's box of her face in skimage's 512x512 photo


def _backdrop(w: int, h: int, seed: int):
    from PIL import Image

    small = np.random.default_rng(seed).integers(60, 200, (4, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def phone_like_folder(folder: Path, small_face: bool = False) -> dict[str, tuple]:
    """Real photographs as a phone folder: the astronaut (scikit-image) enlarged 2x, a 16:9
    group shot with two larger LFW faces beside her, a blurred copy and, with ``small_face``,
    a wide shot where her face is small. Returns her face box in each, in the photo's pixels."""
    from PIL import Image, ImageFilter
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    astro = Image.fromarray(data.astronaut())
    lfw = data.lfw_subset()  # float [0, 1], 25x25; the first 100 are faces

    def other(i: int, size: int):
        grey = Image.fromarray((lfw[i] * 255).astype(np.uint8))
        return grey.resize((size, size), Image.BICUBIC).convert("RGB")

    def box(at: tuple[int, int], scale: float) -> tuple:
        return tuple(round(a + v * scale) for a, v in zip(at * 2, ASTRONAUT_FACE, strict=True))

    truth = {}
    portrait = astro.resize((1024, 1024), Image.LANCZOS)
    portrait.save(folder / "astronaut.jpg", quality=92)
    truth["astronaut.jpg"] = box((0, 0), 2)
    group = _backdrop(1920, 1080, 3)
    group.paste(astro.resize((768, 768), Image.LANCZOS), (576, 150))
    group.paste(other(0, 360), (60, 350))
    group.paste(other(3, 360), (1500, 350))
    group.save(folder / "group.jpg", quality=92)
    truth["group.jpg"] = box((576, 150), 1.5)
    portrait.filter(ImageFilter.GaussianBlur(3)).save(folder / "blurred.jpg", quality=92)
    truth["blurred.jpg"] = truth["astronaut.jpg"]
    if small_face:
        wide = _backdrop(2400, 1350, 5)
        wide.paste(astro.resize((256, 256), Image.LANCZOS), (1500, 700))
        wide.save(folder / "far-away.jpg", quality=92)
        truth["far-away.jpg"] = box((1500, 700), 0.5)
    return truth


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@needs_faces
def test_upload_shows_the_photo_check_as_thumbnails(ui_app, tmp_path):
    """Each photo a thumbnail drawn into the session's folder, with its faces, crop, status
    and warnings; the group shot warns and its subject is the astronaut, not the larger faces."""
    from PIL import Image

    from cameo.ui.photo_view import SUBJECT_COLOUR, THUMB_SIDE

    truth = phone_like_folder(tmp_path / "phone")
    files = [str(tmp_path / "phone" / name) for name in truth]
    sid, _ = ui_app.start_session()
    status, text, _, gallery = ui_app.upload(sid, files, "mike")
    session = ui_app.session(sid)
    report, thumbs = ui_app.photo_check(session, "mike")
    assert ui_app.photo_check(session, "mike")[0] is report  # unchanged folder: not rerun
    assert status.startswith("**Error:** only 3 usable") and "with warnings" in status
    assert report.faces_checked and [t.entry.file for t in thumbs] == sorted(truth)

    entries = {e.file: e for e in report.entries}
    group = entries["group.jpg"]
    assert len(group.faces) == 3 and "several_faces" in group.codes
    assert group.subject != 0  # the other two faces are larger
    assert _iou(group.faces[group.subject], truth["group.jpg"]) > 0.6
    assert "blurry" in entries["blurred.jpg"].codes

    for t in thumbs:
        assert t.path.is_file() and ws.inside(t.path, session.root)
        assert not ws.inside(t.path, session.photos)  # never taken for a photo
        with Image.open(t.path) as im:
            assert max(im.size) <= THUMB_SIDE
            e = t.entry
            s = im.width / e.size[0]  # the subject's box drawn thick and green
            left, top, _, bottom = (v * s for v in e.faces[e.subject])
            r, g, b = im.convert("RGB").getpixel((round(left), round((top + bottom) / 2)))
            assert g > 150 and r < 140 and b < 160, (e.file, (r, g, b), SUBJECT_COLOUR)

    assert gallery.count('<div class="card') == 3
    assert gallery.count('src="data:image/jpeg;base64,') == 3
    assert "3 of 3 files usable" in gallery and "Several faces" in gallery and "Blurry" in gallery
    card = gallery[gallery.index('data-file="group.jpg"') :].split('<div class="card')[0]
    assert "3 faces, the person is #" in card and "several_faces" in card
    assert str(tmp_path) not in gallery and str(tmp_path) not in text
    reopened = ui_app.open_photos(sid, "mike")  # a page opening this session sees the same
    assert reopened[0] == status and text.endswith(reopened[1]) and reopened[3] == gallery

    ui_app.clear_photos(sid, "mike")
    assert not list(session.thumbs.glob("*.jpg"))


def test_the_photo_check_without_the_faces_extra_says_so(ui_app, tmp_path, monkeypatch):
    from PIL import Image

    from cameo import faces

    monkeypatch.setattr(faces, "available", lambda: False)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        _backdrop(640, 480, i).save(src / f"p{i}.jpg")
    Image.new("RGB", (8, 8)).save(src / "tiny.png")
    sid, _ = ui_app.start_session()
    status, text, _, gallery = ui_app.upload(sid, [str(p) for p in sorted(src.iterdir())], "mike")
    assert "only 2 usable" in status
    assert "cameo-lora[faces]" in gallery and "cameo-lora[faces]" in text
    assert "Skipped: too small" in gallery and gallery.count('<div class="card') == 3
    _, thumbs = ui_app.photo_check(ui_app.session(sid), "mike")
    assert all(t.path.is_file() for t in thumbs)


def _summary(identity: float, **numbers) -> dict:
    return {"clips": 2, "identity_normalised": identity, **numbers}


def test_results_show_the_face_judges_numbers(ui_app):
    """A report judged by the face descriptor: face found, same person and normalised
    similarity instead of the world's identification and prompt fidelity."""
    import json

    from cameo.ui.tasks import FACE_METRIC_HEADERS, METRIC_HEADERS

    sid, _ = ui_app.start_session()
    run = ui_app.session(sid).run
    face = dict(face_found=0.9, same_person=0.75, similarity_normalised=0.8123)
    (run / "metrics.json").write_text(
        json.dumps(
            {"best_step": 40, "metrics": {"identity_judge": "face", **_summary(0.7, **face)}}
        )
    )
    status, table = ui_app.results(sid)
    assert list(table.columns) == FACE_METRIC_HEADERS and len(table) == 1
    assert table.values.tolist()[0] == [
        "validation (step 40)",
        "lora",
        "0.700",
        "0.90",
        "0.75",
        "0.812",
    ]

    report = {
        "identity_judge": "face",
        "summary": {
            "subject": {
                "lora": _summary(0.731, **face),
                "base": _summary(0.0, face_found=1.0, same_person=0.0, similarity_normalised=0.2),
            },
            "others": {
                "lora": _summary(0.1, face_found=1.0, same_person=0.25),
                "base": _summary(0.05, face_found=1.0, same_person=0.0),
            },
            "leakage": 0.25,
            "leakage_lora": 0.25,
            "leakage_base": 0.0,
            "leakage_note": "share of frames ...",
        },
    }
    (run / "eval.json").write_text(json.dumps(report))
    status, table = ui_app.results(sid)
    rows = table.values.tolist()
    assert status == "" and list(table.columns) == FACE_METRIC_HEADERS
    assert rows[1] == ["subject", "lora", "0.731", "0.90", "0.75", "0.812"]
    assert rows[2][3:] == ["1.00", "0.00", "0.200"]
    assert rows[-1][0].startswith("leakage") and "same person" in rows[-1][0]
    assert rows[-1][2] == "+0.250" and len(rows) == 6

    report["identity_judge"] = "world"  # the world's eyes: their own columns
    report["summary"]["subject"]["lora"].update(identification_rate=0.5, prompt_fidelity=0.9)
    (run / "eval.json").write_text(json.dumps(report))
    _, table = ui_app.results(sid)
    assert list(table.columns) == METRIC_HEADERS
    assert table.values.tolist()[1] == ["subject", "lora", "0.731", "0.50", "0.90"]
