"""Performance of LoRA training and generation on cameo-tiny: every figure is a ratio of two
timings taken side by side in this run (interleaved turns, median of the repeats).

    .venv/bin/python benchmarks/performance.py            # full suite, about 6-10 minutes
    .venv/bin/python benchmarks/performance.py --quick    # fewer repeats and sizes

Writes docs/performance.json and docs/performance.md. No timing is asserted in the tests; the
equivalence of the fast path with plain PEFT is (tests/test_fast.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

from cameo.models import fast, tiny_model_dir
from cameo.training import TrainConfig
from cameo.training.objective import make_batch
from common import write_json
from perf_setup import (
    CLOCK,
    Alternate,
    ComponentSteps,
    FrozenForward,
    StockLoop,
    TrainerSteps,
    batches,
    cameo_trainer,
    interleaved,
    load_transformer,
    person_folder,
    ratio,
    synthetic_batches,
)

LEVELS = [  # cumulative: each row adds one change to the row above
    ("plain diffusers + PEFT (cameo train --no-fast)", {}),
    ("+ fused AdamW, multi-tensor gradient clipping", {"optimizer": True}),
    ("+ own block code (PEFT layers still called as modules)", {"forward": True}),
    ("+ LoRA as plain addmm ops (no PEFT module calls)", {"lora_ops": True}),
    ("+ q/k/v (and text k/v) in one matrix multiply", {"group_qkv": True}),
    ("+ frozen text side cached per caption", {"text_cache": True}),
    ("+ prompt padding merged into one key", {"merge_padding": True}),
    ("+ rotary as one complex multiply", {"complex_rotary": True}),
    ("+ text K/V once per distinct prompt row", {"distinct_text_rows": True}),
    ("+ one flat buffer for the LoRA tensors (= cameo default)", {"flat": True}),
]


def set_level(trainer, ff: fast.FastForward, level: int) -> None:
    """Switch one live Trainer to the given row of LEVELS."""
    on: dict[str, bool] = {}
    for _, changes in LEVELS[: level + 1]:
        on.update(changes)
    trainer.cfg.fast = on.get("optimizer", False)
    _set_flat(trainer, on.get("flat", False))
    for group in trainer.opt.param_groups:
        group["fused"], group["foreach"] = trainer.cfg.fast, False
    model = ff.model
    if on.get("forward"):
        model.forward = ff
    else:
        fast.disable(model)
    for name in (
        "lora_ops",
        "group_qkv",
        "text_cache",
        "merge_padding",
        "complex_rotary",
        "distinct_text_rows",
    ):
        setattr(ff.options, name, on.get(name, False))


def _set_flat(trainer, on: bool) -> None:
    """Step the trainer's LoRA tensors through its flat buffer (as cameo train does) or one by
    one, each way with an optimiser of its own."""
    saved = trainer.__dict__.setdefault("bench_flat", (trainer.flat, trainer.opt))
    flat = saved[0]
    if on:
        trainer.flat, trainer.opt, trainer.params = flat, saved[1], [flat.param]
        flat.attach_grads()
        return
    if "bench_tensor_opt" not in trainer.__dict__:
        trainer.bench_tensor_opt = torch.optim.AdamW(
            flat.views, lr=trainer.cfg.lr, weight_decay=trainer.cfg.weight_decay
        )  # the Trainer's optimiser settings, over the tensors one by one
    trainer.flat, trainer.opt, trainer.params = None, trainer.bench_tensor_opt, flat.views
    for v in flat.views:
        v.grad = None


# ------------------------------------------------------------------------------ training


def training(ctx: dict) -> dict:
    """Headline ratios, the before/after chain of every change, and thread counts. Two
    identical models here can differ by several percent (where their tensors were placed in memory),
    so every variant alternates between two copies of itself, and a second pair of frozen
    forwards is timed as a control."""
    trainers, base = ctx["trainers"], ctx["base"]
    cfg = trainers[0].cfg
    ffs = [fast.get(t.pipe.transformer) for t in trainers]
    step = Alternate([TrainerSteps(t) for t in trainers])
    data = batches(trainers[0].cache, cfg)
    copies = lambda make: Alternate([make() for _ in range(2)])  # noqa: E731
    stock = copies(lambda: StockLoop(load_transformer(base), cfg, data))
    fns: dict = {
        "forward": copies(lambda: FrozenForward(load_transformer(base), data)),
        "forward (second pair of copies)": copies(
            lambda: FrozenForward(load_transformer(base), data)
        ),
        "stock": stock,
        "full": copies(lambda: StockLoop(load_transformer(base), cfg, data, full=True)),
        "make_batch": lambda: make_batch(trainers[0].cache, cfg, 7),
    }
    pairs = list(zip(trainers, ffs, strict=True))
    for i, (name, _) in enumerate(LEVELS):
        fns[name] = (lambda i=i: [set_level(t, f, i) for t, f in pairs], step)
    res = interleaved(fns, ctx["train_repeats"], ctx["inner"])
    for t, f in pairs:
        set_level(t, f, len(LEVELS) - 1)
    res["cameo"] = res[LEVELS[-1][0]]
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    set_t, clock = torch.set_num_threads, CLOCK["clock"]
    CLOCK["clock"] = "wall"  # CPU time would count the threads' waits twice
    label = {1: "1 thread", threads: f"{threads} threads", other: f"{other} threads"}
    by_threads = interleaved(
        {
            f"cameo, {label[threads]}": (lambda: set_t(threads), step),
            f"cameo, {label[other]}": (lambda: set_t(other), step),
            f"stock, {label[threads]}": (lambda: set_t(threads), stock),
            f"stock, {label[other]}": (lambda: set_t(other), stock),
        },
        ctx["thread_repeats"],
        1,
    )
    set_t(threads)
    CLOCK["clock"] = clock
    fallbacks = {k: v for f in ffs for k, v in f.fallbacks.items()}
    return {"times": res, "threads": by_threads, "fallbacks": fallbacks}


def where_time_goes(ctx: dict) -> dict:
    """torch.profiler over a few steps of the stock loop and of cameo: self time by kind."""
    from torch.profiler import ProfilerActivity, profile

    trainer = ctx["trainers"][0]
    data = batches(trainer.cache, trainer.cfg)
    runs = {
        "stock": StockLoop(load_transformer(ctx["base"]), trainer.cfg, data),
        "cameo": TrainerSteps(trainer),
    }
    out = {}
    for name, f in runs.items():
        for _ in range(3):
            f()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                f()
        wall = (time.perf_counter() - t0) / 5
        kinds: dict[str, float] = {}
        calls = 0
        for e in prof.key_averages():
            if not e.key.startswith("aten::"):
                continue
            calls += e.count
            kinds[_kind(e.key)] = kinds.get(_kind(e.key), 0.0) + e.self_cpu_time_total / 5e6
        total = sum(kinds.values())
        kinds["Python, autograd engine, dispatch"] = max(0.0, wall - total)
        out[name] = {"wall_s": wall, "aten_calls_per_step": calls / 5, "seconds": kinds}
    return out


def _kind(op: str) -> str:
    name = op.removeprefix("aten::")
    if name in ("mm", "addmm", "bmm", "addmm_", "baddbmm", "linear", "matmul", "_addmm_activation"):
        return "matrix multiply"
    if "attention" in name:
        return "attention (SDPA)"
    if "adam" in name or "foreach" in name or name == "linalg_vector_norm":
        return "optimizer, clipping"
    if name in (
        "copy_",
        "_to_copy",
        "clone",
        "contiguous",
        "cat",
        "stack",
        "index",
        "index_select",
    ):
        return "copies"
    return "other kernels (norms, elementwise, views)"


# ---------------------------------------------------------------------------- generation


def generation(ctx: dict) -> dict:
    """Whole ``generate`` calls (text encoder, denoising with CFG, VAE decode) and the
    denoising alone: cameo's path and stock diffusers, each without LoRA, with an unfused LoRA
    and with a fused one. Two identical pipelines here can differ by several percent (where
    their tensors were placed in memory), so each variant alternates between two copies of itself,
    and a second copy of cameo's base is timed as a control."""
    from cameo.generation import GenerateConfig

    cfg = GenerateConfig(prompt="mike, smiling, in a park", steps=ctx["gen_steps"])
    names = [f"{who} {kind}" for kind in ("base", "unfused", "fused") for who in ("cameo", "stock")]
    pipes = {n: [_pipeline(ctx, n) for _ in range(2)] for n in names}
    pipes["cameo base (second copy)"] = [_pipeline(ctx, "cameo base") for _ in range(2)]
    whole = {n: Alternate([_generate_fn(p, cfg, n) for p in ps]) for n, ps in pipes.items()}
    alone = {
        n: Alternate([Denoising(p, cfg, n.startswith("cameo")) for p in ps])
        for n, ps in pipes.items()
    }
    return {
        "times": interleaved(whole, ctx["gen_repeats"], 1, warmup=2),
        "denoising": interleaved(alone, ctx["denoise_repeats"], 1, warmup=2),
        "steps": cfg.steps,
        "frames": cfg.frames,
    }


def _pipeline(ctx: dict, name: str):
    from cameo.generation import apply_loras
    from cameo.models import load_pipeline

    pipe = load_pipeline(ctx["base"])
    kind = name.split()[1]
    if kind != "base" and name.startswith("cameo"):
        apply_loras(pipe, [str(ctx["lora"])], fuse=kind == "fused")
    elif kind != "base":
        _stock_lora(pipe, ctx["lora"], fuse=kind == "fused")
    return pipe


def _generate_fn(pipe, cfg, name: str):
    from cameo.generation import generate_frames

    if name.startswith("cameo"):
        return lambda: generate_frames(pipe, cfg)
    return lambda: _stock_generate(pipe, cfg)


class Denoising:
    """The transformer calls of one generation alone (the steps × cond/uncond calls the
    pipeline makes), on cameo's path or the stock forward: where a LoRA's cost lives."""

    def __init__(self, pipe, cfg, cameo: bool):
        from cameo.models import encode_prompts

        self.pipe, self.cameo = pipe, cameo
        self.texts = encode_prompts(pipe, [cfg.prompt, cfg.negative]).split(1)
        frames = (cfg.frames - 1) // pipe.vae_scale_factor_temporal + 1
        size = (
            cfg.height // pipe.vae_scale_factor_spatial,
            cfg.width // pipe.vae_scale_factor_spatial,
        )
        channels = pipe.transformer.config.in_channels
        self.x = torch.randn(1, channels, frames, *size, generator=torch.Generator().manual_seed(0))
        self.timesteps = torch.linspace(999, 0, cfg.steps)

    def __call__(self) -> None:
        speed = fast.pipeline(self.pipe) if self.cameo else contextlib.nullcontext()
        with torch.no_grad(), speed:
            for t in self.timesteps:
                for text in self.texts:
                    self.pipe.transformer(
                        hidden_states=self.x,
                        timestep=t.view(1),
                        encoder_hidden_states=text,
                        return_dict=False,
                    )


def _stock_lora(pipe, path: Path, fuse: bool) -> None:
    pipe.load_lora_weights(str(path), adapter_name="mike")
    if fuse:
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
        pipe.unload_lora_weights()


def _stock_generate(pipe, cfg) -> None:
    with torch.no_grad():
        pipe(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative,
            height=cfg.height,
            width=cfg.width,
            num_frames=cfg.frames,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=torch.Generator().manual_seed(0),
            max_sequence_length=64,
            output_type="np",
        )


# -------------------------------------------------------------------------------- memory


def memory(ctx: dict) -> dict:
    """Peak bytes held by torch tensors while setting up training (adapter, optimizer, caches)
    and running three steps (batch 8, photos), over the loaded model: replayed from the
    profiler's allocation records. Deterministic, unlike the process's resident size."""
    texts, cfg = ctx["texts"], ctx["trainers"][0].cfg
    data = synthetic_batches(texts, cfg.batch, 1, n=3)
    kinds = {
        "cameo": lambda m: ComponentSteps(m, cfg.lora, data, texts),
        "stock": lambda m: StockLoop(m, cfg, data),
        "full": lambda m: StockLoop(m, cfg, data, full=True),
        "forward": lambda m: FrozenForward(m, data),
    }
    return {k: {"peak_mb": _peak_bytes(ctx["base"], make) / 2**20} for k, make in kinds.items()}


def _peak_bytes(base: Path, make) -> int:
    from torch.profiler import ProfilerActivity, profile

    model = load_transformer(base)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step = make(model)
        for _ in range(3):
            step()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


# ------------------------------------------------------------------------------- scaling


def scaling(ctx: dict) -> dict:
    texts = ctx["texts"]
    base, cfg = ctx["base"], ctx["trainers"][0].cfg
    out = {"rank": [], "frames": [], "batch": []}
    for rank in ctx["ranks"]:
        c = TrainConfig.from_options(rank=rank, alpha=float(rank))
        data = synthetic_batches(texts, cfg.batch, 1)
        cameo = ComponentSteps(load_transformer(base), c.lora, data, texts)
        stock = StockLoop(load_transformer(base), c, data)
        res = interleaved({"cameo": cameo, "stock": stock}, ctx["repeats"], ctx["inner"])
        out["rank"].append({"rank": rank, **_pair(res)})
    cameo = ComponentSteps(load_transformer(base), cfg.lora, [], texts)
    stock = StockLoop(load_transformer(base), cfg, [])
    forward = FrozenForward(load_transformer(base), [])
    for key, shapes in (("frames", ctx["frames"]), ("batch", ctx["batches"])):
        for value in shapes:
            batch, frames = (cfg.batch, value) if key == "frames" else (value, 1)
            data = synthetic_batches(texts, batch, (frames - 1) // 4 + 1)
            for f in (cameo, stock, forward):
                f.data = data
            res = interleaved(
                {"cameo": cameo, "stock": stock, "forward": forward}, ctx["repeats"], ctx["inner"]
            )
            out[key].append({key: value, **_pair(res)})
    return out


def _pair(res: dict) -> dict:
    row = {k: v["median_s"] for k, v in res.items()}
    row["cameo/stock"] = ratio(res, "cameo", "stock")
    if "forward" in row:
        row["cameo/forward"] = ratio(res, "cameo", "forward")
    return row


def photos(ctx: dict) -> list[dict]:
    """Total ``cameo train`` time against the number of photos: measured setup (reading,
    VAE-encoding, text-encoding) plus the default steps at the measured step time."""
    rows = []
    for n in ctx["photo_counts"]:
        folder = person_folder(ctx["tmp"], n)
        t0 = time.perf_counter()
        trainer = cameo_trainer(folder, ctx["tmp"] / f"run-{n}", threads=ctx["threads"])
        setup = time.perf_counter() - t0
        res = interleaved({"step": TrainerSteps(trainer)}, ctx["repeats"], ctx["inner"])
        step = res["step"]["median_s"]
        steps = trainer.cfg.steps
        rows.append(
            {"photos": n, "setup_s": setup, "step_s": step, "total_s": setup + steps * step}
        )
    return rows


# --------------------------------------------------------------------------------- FLOPs


def flops(ctx: dict, step_s: float, stock_s: float) -> dict:
    """FLOPs of one training step (torch's FlopCounterMode: matmuls and attention) over its
    time, against this machine's fp32 matrix-multiply peak at the same thread count."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = ctx["trainers"][0]
    counts = {}
    data = batches(trainer.cache, trainer.cfg)
    for name, f in (
        ("cameo", TrainerSteps(trainer)),
        ("stock", StockLoop(load_transformer(ctx["base"]), trainer.cfg, data)),
    ):
        with FlopCounterMode(display=False) as fc:
            f()
        counts[name] = fc.get_total_flops()
    a = torch.randn(1024, 1024)
    res = interleaved({"mm": lambda: a @ a}, 7, 3)
    peak = 2 * 1024**3 / res["mm"]["median_s"]
    return {
        "cameo_flops": counts["cameo"],
        "stock_flops": counts["stock"],
        "cameo_flops_per_s": counts["cameo"] / step_s,
        "stock_flops_per_s": counts["stock"] / stock_s,
        "matmul_peak_flops_per_s": peak,
    }


# ---------------------------------------------------------------------------------- main


def lora_file(trainer, path: Path) -> Path:
    """A LoRA with non-zero B (after a few real steps) for the generation timings."""
    from cameo.lora import adapter_state_dict
    from cameo.lora_files import save_lora_file

    step = TrainerSteps(trainer)
    for _ in range(3):
        step()
    model = trainer.pipe.transformer
    return save_lora_file(path, adapter_state_dict(model), trainer.cfg.lora, {}, True)


def context(args, tmp: Path) -> dict:
    quick = args.quick
    folder = person_folder(tmp, 20)
    trainers = [cameo_trainer(folder, tmp / f"run{i}", threads=args.threads) for i in range(2)]
    c = trainers[0].cache
    texts = torch.cat([c["text"], c["empty"][None]])  # the prompts training uses
    return {
        "tmp": tmp,
        "threads": args.threads,
        "base": tiny_model_dir(),
        "trainers": trainers,
        "texts": texts,
        "repeats": 9 if quick else 25,
        "train_repeats": 15 if quick else 45,
        "inner": 1,
        "thread_repeats": 5 if quick else 9,
        "gen_steps": 20,
        "gen_repeats": 3 if quick else 11,
        "denoise_repeats": 5 if quick else 13,
        "ranks": [1, 16, 64] if quick else [1, 4, 16, 64],
        "frames": [1, 17] if quick else [1, 17, 33],
        "batches": [1, 8, 32] if quick else [1, 4, 8, 16, 32],
        "photo_counts": [5, 20] if quick else [5, 10, 20, 40],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for all timings but the thread table (cameo train's default here)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    CLOCK["clock"] = "cpu" if args.threads == 1 else "wall"
    from perf_report import markdown

    t0 = time.time()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="cameo-perf-") as d:
        ctx = context(args, Path(d))
        result: dict = {"threads": args.threads, "quick": args.quick, "clock": CLOCK["clock"]}
        result["targets"] = ctx["trainers"][0].cfg.lora.targets  # the loops' shared LoRA targets
        result["turns"] = {
            k: ctx[f"{k}_repeats" if k != "scaling" else "repeats"]
            for k in ("train", "scaling", "gen", "denoise", "thread")
        }
        for name, fn in (("training", training), ("profile", where_time_goes)):
            print(f"[{time.time() - t0:5.0f} s] {name}", flush=True)
            result[name] = fn(ctx)
        times = result["training"]["times"]
        result["flops"] = flops(ctx, times["cameo"]["median_s"], times["stock"]["median_s"])
        ctx["lora"] = lora_file(ctx["trainers"][0], Path(d) / "mike.safetensors")
        for name, fn in (
            ("generation", generation),
            ("memory", memory),
            ("scaling", scaling),
            ("photos", photos),
        ):
            print(f"[{time.time() - t0:5.0f} s] {name}", flush=True)
            result[name] = fn(ctx)
    load.append(os.getloadavg()[0])
    command = "python benchmarks/performance.py" + (" --quick" if args.quick else "")
    command += f" --threads {args.threads}" if args.threads != 1 else ""
    result.update(command=command, minutes=(time.time() - t0) / 60, load_average=load)
    path = write_json("performance.json", result)
    (path.parent / "performance.md").write_text(markdown(json.loads(path.read_text())))
    print(f"wrote {path} and docs/performance.md in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
