"""What benchmarks/performance.py times: cameo's own training step, a stock diffusers + PEFT
loop written the way the diffusers examples write it, full fine-tuning, the frozen forward, and
an interleaved timer that compares them side by side."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cameo.diffusion import flow_matching_loss
from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.models import fast
from cameo.training import TrainConfig, Trainer, flat
from cameo.training.objective import make_batch

# ----------------------------------------------------------------------------- the timer


Timed = Callable[[], object] | tuple[Callable[[], object], Callable[[], object]]
CLOCK = {"clock": "cpu"}  # "cpu": process CPU time (single-threaded runs), or "wall"


def interleaved(fns: dict[str, Timed], repeats: int, inner: int, warmup: int = 2) -> dict:
    """Seconds per call of each function, timed in turns (each turn runs every function once,
    in a shuffled order) so that load from other processes on a shared machine falls on all
    of them alike. An entry may be (prepare, f): prepare runs untimed before each turn of f
    (e.g. to switch a setting). Keeps every turn, so that ratios can be taken turn by turn.

    Both clocks are kept; ``median_s`` and ``turns`` are the one CLOCK names. With one
    thread, process CPU time is the time the work takes on a core of its own: it leaves out
    the waits while other jobs hold the core, which wall-clock time on a shared machine
    includes."""
    pairs = {k: v if isinstance(v, tuple) else (lambda: None, v) for k, v in fns.items()}
    for prepare, f in pairs.values():
        prepare()
        for _ in range(warmup):
            f()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    order = list(pairs)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for name in order:
            prepare, f = pairs[name]
            prepare()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                f()
            wall[name].append((time.perf_counter() - t0) / inner)
            cpu[name].append((time.process_time() - c0) / inner)
    out = {}
    for k in fns:
        chosen = cpu[k] if CLOCK["clock"] == "cpu" else wall[k]
        med = statistics.median(chosen)
        out[k] = {
            "median_s": med,
            "wall_s": statistics.median(wall[k]),
            "cpu_s": statistics.median(cpu[k]),
            "spread": (max(chosen) - min(chosen)) / med,
            "repeats": repeats,
            "turns": chosen,
            "wall_turns": wall[k],
        }
    return out


class Alternate:
    """Calls its functions in turn, one per call (copies of one variant, to average out where
    each copy's tensors were placed in memory)."""

    def __init__(self, fns: list):
        self.fns, self.i = fns, 0

    def __call__(self) -> None:
        self.i += 1
        self.fns[self.i % len(self.fns)]()


def ratio(res: dict, a: str, b: str, key: str = "turns") -> float:
    """Median over turns of a's time ÷ b's time in the same turn (a paired comparison)."""
    return statistics.median(x / y for x, y in zip(res[a][key], res[b][key], strict=True))


# ------------------------------------------------------------------------------ workloads


def person_folder(root: Path, photos: int) -> Path:
    from cameo.data.world_folders import write_person_folder

    out = root / f"photos-{photos}"
    if not out.is_dir():
        write_person_folder(7, out, photos)
    return out


def cameo_trainer(data: Path, out: Path, **overrides) -> Trainer:
    """The default ``cameo train`` on cameo-tiny (validation and logging off), set up; without
    prior preservation unless asked, so that its step has the objective of the reference loop
    (which has none: the default's extra class-prompt forwards are a different workload)."""
    cfg = TrainConfig.from_options(
        data=str(data),
        trigger="mike",
        out=str(out),
        validate_every=0,
        log_with="none",
        overwrite=True,
        **{"prior_preservation": 0.0, **overrides},
    )
    trainer = Trainer(cfg, log=lambda *_: None)
    trainer.setup()
    return trainer


class TrainerSteps:
    """``Trainer._step`` as a callable, one step per call, as ``cameo train`` runs it."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.step = trainer, 0

    def __call__(self) -> float:
        self.step += 1
        return self.trainer._step(self.step)


def batches(cache: dict, cfg: TrainConfig, n: int = 16) -> list[dict]:
    return [make_batch(cache, cfg, s) for s in range(n)]


class StockLoop:
    """A LoRA (or full fine-tuning) step the way diffusers' ``train_text_to_image_lora.py`` and
    ``train_dreambooth_lora_*.py`` write it: freeze, ``add_adapter(LoraConfig)``,
    ``cast_training_params``, AdamW over the trainable parameters, forward on the noisy
    latents, MSE to the flow target, ``accelerator.backward``, clip, step, zero_grad. No cameo
    code on the model's path."""

    def __init__(
        self,
        transformer,
        cfg: TrainConfig,
        data: list[dict],
        full: bool = False,
        mixed_precision: str = "no",
    ):
        from accelerate import Accelerator
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        self.acc = Accelerator(mixed_precision=mixed_precision)
        if full:
            transformer.requires_grad_(True)
        else:
            transformer.requires_grad_(False)
            lora_config = LoraConfig(
                r=cfg.lora.rank,
                lora_alpha=cfg.lora.alpha,
                init_lora_weights="gaussian",
                target_modules=cfg.lora.target_list(),
            )
            transformer.add_adapter(lora_config)
            cast_training_params(transformer, dtype=torch.float32)
        transformer.train()
        self.params = list(filter(lambda p: p.requires_grad, transformer.parameters()))
        optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, eps=1e-8
        )
        scheduler = get_scheduler("constant", optimizer=optimizer)
        self.transformer, self.optimizer, self.scheduler = self.acc.prepare(
            transformer, optimizer, scheduler
        )
        self.data, self.i = data, 0

    def __call__(self) -> float:
        batch = self.data[self.i % len(self.data)]
        self.i += 1
        x0, noise, sigmas = batch["x0"], batch["noise"], batch["sigmas"]
        s = sigmas.view(-1, 1, 1, 1, 1)
        noisy = (1.0 - s) * x0 + s * noise
        pred = self.transformer(
            hidden_states=noisy,
            timestep=sigmas * 1000.0,
            encoder_hidden_states=batch["text"],
            return_dict=False,
        )[0]
        target = noise - x0
        loss = torch.mean(((pred.float() - target.float()) ** 2).reshape(target.shape[0], -1), 1)
        loss = loss.mean()
        self.acc.backward(loss)
        if self.acc.sync_gradients:
            self.acc.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return loss.detach().item()


class FrozenForward:
    """The stock base transformer's forward under ``no_grad`` (the floor's unit)."""

    def __init__(self, model, data: list[dict]):
        self.model = model.requires_grad_(False)
        self.data, self.i = data, 0

    def __call__(self) -> None:
        batch = self.data[self.i % len(self.data)]
        self.i += 1
        with torch.no_grad():
            flow_matching_loss(
                self.model, batch["x0"], batch["text"], batch["sigmas"], batch["noise"]
            )


def load_transformer(base_dir: Path):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(base_dir, subfolder="transformer")


class ComponentSteps:
    """cameo's step from its parts, as ``Trainer._step`` runs them (PEFT adapter in fp32 on the
    flat buffer, fused AdamW, multi-tensor clipping, the shared loss), for shapes and models the
    Trainer is not set to: other ranks, frames and batch sizes, full-size Wan configs. With
    ``autocast`` (a dtype) the forward runs under it, as ``--mixed-precision bf16`` trains, and
    without ``cameo.fast``'s forward, which the Trainer enables only in fp32."""

    def __init__(
        self,
        model,
        spec: LoraSpec,
        data: list[dict],
        texts: torch.Tensor,
        autocast: torch.dtype | None = None,
    ):
        self.model = model
        add_lora(self.model, spec)
        lora = lora_parameters(self.model)
        for p in lora:  # the frozen base may be bf16; the LoRA trains in fp32
            p.data = p.data.float()
        self.flat = flat.FlatParameters(lora)
        if autocast is None:
            fast.enable(self.model).cache_text(texts)
        self.autocast = autocast
        self.opt = flat.fused_adamw([self.flat.param], lr=1e-4)
        self.data, self.i = data, 0

    def __call__(self) -> float:
        b = self.data[self.i % len(self.data)]
        self.i += 1
        device = b["x0"].device.type
        with torch.autocast(
            device, dtype=self.autocast or torch.bfloat16, enabled=bool(self.autocast)
        ):
            loss = flow_matching_loss(self.model, b["x0"], b["text"], b["sigmas"], b["noise"])
            loss = loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([self.flat.param], 1.0, foreach=True)
        self.opt.step()
        self.flat.zero_grad()
        return loss.item()


def synthetic_batches(
    texts: torch.Tensor, batch: int, latent_frames: int, n: int = 8, seed: int = 0
) -> list[dict]:
    """Batches of the built-in model's latent shape (8 × F × 8 × 8) with real prompt rows."""
    from cameo.diffusion import sample_sigmas
    from cameo.models import FLOW_SHIFT

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x0 = torch.randn(batch, 8, latent_frames, 8, 8, generator=g)
        idx = torch.randint(len(texts), (batch,), generator=g)
        out.append(
            {
                "x0": x0,
                "noise": torch.randn(x0.shape, generator=g),
                "sigmas": sample_sigmas(batch, FLOW_SHIFT, g),
                "text": texts[idx],
            }
        )
    return out
