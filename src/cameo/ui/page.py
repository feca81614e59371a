"""The page of ``cameo ui``: four tabs (Photos, Train, Generate, Results) wired to the
handlers of :class:`cameo.ui.app.CameoApp`, and the server that serves it.

Served on 127.0.0.1 unless asked otherwise; no share link, no analytics, no run history,
nothing fetched from the internet (the default theme's fonts ship with Gradio).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import gradio as gr

from ..training import TrainConfig
from ..training.config import resolve_from_base
from ..world import identity
from ..world.captions import full_description
from .app import DEFAULT_PERSON, MIXES, WORLD_PEOPLE, CameoApp
from .tasks import METRIC_HEADERS
from .view import DEFAULT_TRIGGER
from .workspace import inside

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


INTRO = """# cameo: clone a person into a video model
1. **Photos**: upload about 20 photos of one person (or a zip), or try a built-in person.
2. **Train**: a few minutes on a CPU with the built-in model.
3. **Generate**: write a prompt that names the person by the trigger word.
4. **Results**: measure the clone, download the LoRA for diffusers, ComfyUI or kohya.
"""


def _people() -> list[tuple[str, int]]:
    return [
        (f"person {i}: {full_description(identity('heldout', i))}", i) for i in range(WORLD_PEOPLE)
    ]


def _photos_tab(app: CameoApp, sid) -> tuple[gr.Textbox, gr.Markdown, list]:
    with gr.Tab("1. Photos", id="photos"):
        with gr.Row():
            files = gr.File(
                label="Photos, clips, caption .txt files, or one zip",
                file_count="multiple",
                elem_id="upload",
            )
            with gr.Column():
                person = gr.Dropdown(
                    _people(), value=DEFAULT_PERSON, label="Or try a built-in person"
                )
                use = gr.Button("Use this person's 20 photos", elem_id="use-person")
                clear = gr.Button("Remove all photos", variant="stop")
        trigger = gr.Textbox(
            DEFAULT_TRIGGER,
            label="Trigger word (names the person in prompts)",
            elem_id="trigger",
        )
        status = gr.Markdown(elem_id="photos-status")
        gallery = gr.HTML(
            "",
            js_on_load=None,
            elem_id="photo-report",
            padding=False,
        )
        with gr.Accordion("The same report as text (photo_report.txt)", open=False):
            report = gr.Textbox(label="Photo check", lines=12, interactive=False, elem_id="report")
        captions = gr.Dataframe(
            headers=["file", "caption"],
            datatype=["str", "str"],
            type="array",
            interactive=True,
            static_columns=[0],
            label=(
                "Captions (edit, then save; the trigger word is added where missing). Describe "
                "what changes (action, clothes, hat, background), not the person's own look."
            ),
            elem_id="captions",
        )
        save = gr.Button("Save captions")
    outs = [status, report, captions, gallery]
    files.upload(app.upload, [sid, files, trigger], outs).then(lambda: None, None, files)
    use.click(app.use_person, [sid, person, trigger], outs)
    clear.click(app.clear_photos, [sid, trigger], outs)
    save.click(app.save_captions, [sid, captions, trigger], outs)
    trigger.blur(app.check_photos, [sid, trigger], outs)
    return trigger, status, outs


def _train_tab(app: CameoApp, sid, trigger) -> None:
    d = TrainConfig(base=app.base)  # the page shows cameo train's own defaults for the base
    resolve_from_base(d, on_gpu=False)
    with gr.Tab("2. Train", id="train"):
        with gr.Row():
            rank = gr.Radio([4, 8, 16, 32], value=d.lora.rank, label="Rank", elem_id="rank")
            steps = gr.Number(d.steps, precision=0, label="Steps", elem_id="steps")
        with gr.Accordion("More settings", open=False, elem_id="more-train"), gr.Row():
            lr = gr.Number(d.lr, label="Learning rate", elem_id="lr")
            batch = gr.Number(d.batch, precision=0, label="Batch size", elem_id="batch")
            every = gr.Number(
                d.validate_every,
                precision=0,
                label="Preview and identity check every N steps (0 = at the end)",
                elem_id="preview-every",
            )
            seed = gr.Number(0, precision=0, label="Seed")
        with gr.Row():
            start = gr.Button("Train", variant="primary", elem_id="train")
            cancel = gr.Button("Cancel", elem_id="cancel")
            resume = gr.Button("Resume", elem_id="resume")
        status = gr.Markdown("No training run yet.", elem_id="train-status")
        with gr.Row():
            plot = gr.LinePlot(x="step", y="loss", title="Loss", elem_id="loss-plot")
            preview = gr.Video(
                label="Latest preview",
                height=256,
                autoplay=True,
                loop=True,
                interactive=False,
                elem_id="preview",
            )
        identity = gr.Markdown(elem_id="identity")
        log = gr.Textbox(label="Log", lines=6, interactive=False, elem_id="train-log")
    start.click(app.start_train, [sid, trigger, rank, steps, lr, batch, every, seed], status)
    cancel.click(app.cancel_train, sid, status)
    resume.click(app.resume_train, [sid, steps], status)
    timer = gr.Timer(1.0)
    timer.tick(
        app.poll_train,
        sid,
        [status, plot, preview, identity, log],
        show_progress="hidden",
        queue=False,
    )


def _generate_tab(app: CameoApp, sid) -> None:
    with gr.Tab("3. Generate", id="generate"):
        prompt = gr.Textbox(
            label="Prompt (name the person by the trigger word)",
            placeholder="mike, speaking, in front of a blue wall",
            elem_id="prompt",
        )
        with gr.Row():
            scale = gr.Slider(0, 1.5, value=1.0, step=0.05, label="LoRA scale")
            seed = gr.Number(0, precision=0, label="Seed", elem_id="gen-seed")
            steps = gr.Slider(4, 50, value=20, step=1, label="Sampling steps")
        with gr.Accordion("First frame (image-to-video bases)", open=False):
            first_frame = gr.Image(
                type="filepath",
                label="The photo the clip starts from (needed by cameo-tiny-i2v and Wan I2V "
                "bases; a text-to-video base refuses it)",
                elem_id="first-frame",
            )
        with gr.Accordion("A second person", open=False):
            gr.Markdown(
                "Two people stand side by side (a 128-wide clip). Name both by their trigger "
                "words, e.g. *two people side by side in front of a blue wall: on the left "
                "mike speaking, on the right anna smiling* (the default when the prompt is empty)."
            )
            second = gr.File(
                label="Their LoRA (.safetensors)",
                file_types=[".safetensors"],
                elem_id="second-lora",
            )
            with gr.Row():
                second_scale = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Their scale")
                mix = gr.Dropdown(
                    MIXES,
                    value="windows",  # the best two-person method measured (docs/results.md)
                    label="Composition method (regional: each on their own half; windows: each drawn "
                    "in a window of their own)",
                    elem_id="mix",
                )
            own_prompts = gr.Checkbox(
                value=True,
                label="Each half reads its own part of the prompt (after 'on the left' / "
                "'on the right'), so the two descriptions do not mix; with windows always on, "
                "since a window holds one person",
                interactive=own_prompts_choice(mix.value)["interactive"],
                elem_id="own-prompts",
            )
            mix.change(own_prompts_choice, mix, own_prompts)
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown(elem_id="gen-status")
        video = gr.Video(
            label="Clip", height=320, autoplay=True, loop=True, interactive=False, elem_id="video"
        )
    go.click(
        app.generate,
        [sid, prompt, scale, seed, steps, second, second_scale, mix, own_prompts, first_frame],
        [status, video],
        concurrency_limit=None,  # waiting happens in cameo's own queue, with positions
    )


def _results_tab(app: CameoApp, sid) -> None:
    with gr.Tab("4. Results", id="results") as tab:
        status = gr.Markdown(elem_id="results-status")
        table = gr.Dataframe(
            headers=METRIC_HEADERS, interactive=False, label="Metrics", elem_id="metrics"
        )
        with gr.Row():
            seeds = gr.Slider(1, 4, value=1, step=1, label="Seeds per prompt")
            measure = gr.Button(
                "Measure identity, fidelity and leakage (a minute or more)", elem_id="measure"
            )
        prepare = gr.Button("Prepare downloads: diffusers, ComfyUI, kohya", elem_id="prepare")
        files = gr.File(
            label="Downloads", file_count="multiple", interactive=False, elem_id="downloads"
        )
    tab.select(app.results, sid, [status, table])
    measure.click(app.measure, [sid, seeds], [status, table], concurrency_limit=None)
    prepare.click(app.downloads, sid, [status, files])


def own_prompts_choice(mix: str) -> dict:
    """The own-prompts checkbox is a choice only for mixes that read the whole prompt by
    default: windows always give each window its own side's words (generate.region_prompts)."""
    return gr.update(interactive=mix != "windows")


def build_blocks(app: CameoApp) -> gr.Blocks:
    """The page: four tabs over one session id, created when the page loads."""
    with gr.Blocks(title="cameo", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        sid = gr.State(None)
        gr.Markdown(INTRO)
        trigger, photos_status, photos_view = _photos_tab(app, sid)
        _train_tab(app, sid, trigger)
        _generate_tab(app, sid)
        _results_tab(app, sid)
        demo.load(app.start_session, None, [sid, photos_status]).then(
            app.open_photos, [sid, trigger], photos_view
        )
    return demo


def serve(
    workdir: Path | str = "cameo-ui-work",
    host: str = "127.0.0.1",
    port: int = 7860,
    base: str = "cameo-tiny",
    block: bool = True,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[gr.Blocks, CameoApp]:
    """Start the app; with ``block=False`` return once it serves (for tests)."""
    app = CameoApp(Path(workdir), base=base, device=device, dtype=dtype)
    warning = host_warning(host, port)
    if warning:
        print(warning, file=sys.stderr)
    demo = build_blocks(app)
    demo.queue(default_concurrency_limit=None)  # heavy work is serialised by cameo's own queue
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,  # never a public tunnel (and no frpc download)
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
        run_history=False,
        max_file_size="100mb",
        allowed_paths=_allowed(app.workdir),
        mcp_server=False,
        enable_monitoring=False,
        ssr_mode=False,
    )
    return demo, app


def host_warning(host: str, port: int) -> str | None:
    """What to print when serving beyond this computer (the app has no login)."""
    if host in LOOPBACK:
        return None
    return (
        f"warning: serving on {host}, not just this computer: anyone who can reach port {port} "
        "can use the app and see its photos and LoRAs (there is no login)."
    )


def _allowed(workdir: Path) -> list[str]:
    """Gradio may hand out files from the current and temporary folders; a work folder
    elsewhere has to be named. Session folders have unguessable names."""
    if inside(workdir, Path.cwd()) or inside(workdir, Path(tempfile.gettempdir())):
        return []
    return [str(workdir / "sessions")]
