"""``Trainer``: sets up the base, the cache and the adapter, runs the shared optimisation loop,
validates, and writes the LoRA file.

The base stays frozen; PEFT adds the low-rank layers; the loss is ``flow_matching_loss``, the
same function pretraining uses. The batch at step s is a pure function of (seed, s), so a
resumed run continues exactly where it stopped, and under ``torchrun``/``accelerate launch``
each process takes its slice of the same global batch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator

from ..compose import set_orthogonal_down
from ..data import scan_folder, training_target
from ..lora import (
    LoraSpec,
    adapter_spec,
    add_lora,
    load_adapter,
    lora_parameters,
    parameter_counts,
)
from ..lora_files import base_hash, save_expert_files, save_lora_file
from ..models import fast, load_pipeline, memory, resolve_base, text_tokens_for
from ..models.profiles import detect_profile
from . import checkpoint as ckpt
from . import flat
from .cache import build_cache
from .config import TrainConfig
from .disk_cache import DiskCache
from .ema import ParameterEMA
from .experts import TwoExperts, adapter_tensors, members
from .loop import Checkpointed, Events, LoopResult, OptimisationLoop, Schedule, stop_on_sigint
from .objective import expert_and_range, make_batch, training_loss, unwrap_model
from .progress import ProgressBar
from .validation import Validator, describe_validation


class TrainingInterrupted(Exception):
    """The run was stopped (Ctrl+C or ``Trainer.stop()``) after a complete step; a checkpoint
    was saved."""


class Trainer:
    """Sets up, trains, validates, checkpoints and saves one LoRA.

    ``events`` listen to the run (``Events.on_step``, ``on_validation``, ``on_checkpoint``);
    ``stop()`` asks it to stop after the current step (from any thread), saving a checkpoint,
    and ``train()`` then raises ``TrainingInterrupted``."""

    def __init__(
        self, cfg: TrainConfig, resume: bool = False, log=print, events: Events | None = None
    ):
        self.profile = detect_profile(resolve_base(cfg.base))
        filled = cfg.resolve(self.profile, on_gpu=torch.cuda.is_available())
        if filled:
            given = ", ".join(f"{k} {v}" for k, v in filled.items())
            log(f"settings from the base ({self.profile.family}): {given}")
        cfg.validate()
        self.cfg, self.log, self.resume = cfg, log, resume
        self.events = events or Events()
        self.out = Path(cfg.out)
        self.lora_path = self.out / f"{cfg.name}.safetensors"
        if self.lora_path.exists() and not (cfg.overwrite or resume):
            raise FileExistsError(f"{self.lora_path} exists")
        trackers = None if cfg.log_with in ("", "none") else cfg.log_with
        self.acc = Accelerator(
            cpu=flat.launched_on_cpus(),
            mixed_precision=cfg.mixed_precision,
            log_with=trackers,
            project_dir=str(self.out / "logs"),
        )
        if cfg.offload != "none" and self.acc.num_processes > 1:
            raise ValueError("--offload needs one process: DDP keeps every weight on each GPU")
        if cfg.expert == "both" and self.profile.experts == 2 and self.acc.num_processes > 1:
            raise ValueError(
                "--expert both needs one process (DDP would keep both experts on each GPU); "
                "train --expert high and --expert low in runs of their own"
            )
        self.report = scan_folder(
            Path(cfg.data),
            cfg.trigger,
            target=training_target(cfg.base, cfg.height, cfg.width),
            min_usable=cfg.min_photos,
        )
        self.loop: OptimisationLoop | None = None
        self._stop_early = False  # stop() before the loop exists

    # ------------------------------------------------------------------- setting up

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.base_dir = resolve_base(cfg.base)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            cfg.mixed_precision, torch.float32
        )
        # on the CPU first: the encoders visit the GPU for the cache, then the transformer
        self.pipe = load_pipeline(
            self.base_dir,
            device="cpu",
            dtype=dtype,
            image_to_video=True if cfg.image_to_video else None,
        )
        self.store = store = DiskCache(
            self.out / "cache" if cfg.disk_cache else None,
            self.base_dir,
            self.pipe.vae.dtype,
            text_tokens_for(self.pipe),
        )
        generated = cfg.prior_preservation > 0 and cfg.prior_source == "generated"
        with memory.encoding(
            self.pipe, self.acc.device, transformer=generated, offload=cfg.offload
        ):
            self.cache = build_cache(self.pipe, self.report, cfg, store)
        if cfg.disk_cache:
            self.log(
                f"cache {self.out / 'cache'}: encoded {store.encoded['latents']} latents and "
                f"{store.encoded['text']} texts, reused {store.reused['latents']} and "
                f"{store.reused['text']}"
            )
        model, self.sigma_range = expert_and_range(self.pipe, cfg.expert)
        if cfg.expert == "both" and not isinstance(model, TwoExperts):
            self.log("--expert both: this base has one transformer, which trains alone")
        if self.acc.device.type == "cpu":
            torch.set_num_threads(flat.cpu_threads(cfg.threads, model))
        self.spec = self._add_adapter(model)
        for p in lora_parameters(model):  # the frozen base may be bf16; the LoRA trains in fp32
            p.data = p.data.float()
        if cfg.grad_checkpointing:
            model.enable_gradient_checkpointing()
        if isinstance(model, TwoExperts):
            placed = model.place(self.acc.device, fp8=cfg.fp8_base, offload=cfg.offload)
        else:
            placed = memory.place_for_training(
                self.pipe, model, device=self.acc.device, fp8=cfg.fp8_base, offload=cfg.offload
            )
        for line in placed:
            self.log(line)
        trainable, frozen = parameter_counts(model)
        self.log(
            f"LoRA rank {self.spec.rank} on {self.spec.target_list()}: "
            f"{trainable:,} trainable, {frozen:,} frozen parameters"
        )
        self._prepare_optimiser(model)
        self.ema = ParameterEMA(self.lora, cfg.ema) if cfg.ema > 0 else None
        self.best = {"score": -math.inf, "step": 0, "tensors": None, "metrics": None}
        self.validator = (
            Validator(self) if self.acc.is_main_process and cfg.validate_every >= 0 else None
        )
        if self.acc.is_main_process and not self.acc.trackers and cfg.log_with not in ("", "none"):
            scalars = (int, float, str, bool)
            config = {k: v for k, v in asdict(cfg).items() if isinstance(v, scalars)}
            self.acc.init_trackers("cameo", config=config)

    def _add_adapter(self, model) -> LoraSpec:
        """A fresh adapter from the config, or the one in ``--init-from`` (whose rank, alpha
        and targets then win over the flags, and are written to config.json and the file)."""
        cfg = self.cfg
        if not cfg.init_from:
            for m in members(model):
                add_lora(m, cfg.lora, "default")
                if cfg.orthogonal_slot >= 0:
                    set_orthogonal_down(m, cfg.orthogonal_slot, cfg.lora.rank, cfg.orthogonal_seed)
            return cfg.lora
        model.requires_grad_(False)
        if isinstance(model, TwoExperts):
            model.load_adapter(Path(cfg.init_from), "default", self.out / "init-from")
        else:
            load_adapter(model, Path(cfg.init_from), "default")
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n)
        spec = adapter_spec(model)
        flags = cfg.lora
        same_shape = (spec.rank, spec.alpha, spec.rslora) == (flags.rank, flags.alpha, flags.rslora)
        if not same_shape or spec.target_list() != sorted(flags.target_list()):
            self.log(
                f"--init-from {cfg.init_from}: training its adapter (rank {spec.rank}, alpha "
                f"{spec.alpha:g}, targets {spec.targets}); --rank/--alpha/--targets are ignored"
            )
        cfg.lora = spec
        return spec

    def _prepare_optimiser(self, model) -> None:
        cfg = self.cfg
        lora = lora_parameters(model)
        self.flat, params = None, lora
        two = isinstance(model, TwoExperts)
        if cfg.fast and two:
            self.log(
                "--expert both: the LoRA tensors step one by one, not as one flat buffer, so "
                "that the expert a step leaves idle takes no AdamW step"
            )
        if cfg.fast and self.acc.num_processes == 1 and not two:  # DDP: its own buckets
            # the model is on its device already: a later move would replace the views' tensors
            self.flat = flat.FlatParameters(lora)
            params = [self.flat.param]
        adamw = flat.fused_adamw if cfg.fast else torch.optim.AdamW
        self.opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # offload hooks own the weights; two experts place their own
        placement = [not (memory.is_offloaded(model) or two), True]
        self.model, self.opt = self.acc.prepare(model, self.opt, device_placement=placement)
        self.params = params  # what the optimiser steps and clipping reads
        self.lora = lora  # the adapter's own tensors (views of the flat one, if any)
        if cfg.fast and cfg.mixed_precision == "no" and not memory.has_hooks(model):
            self._enable_fast(unwrap_model(self.model))

    def _enable_fast(self, model) -> None:
        """Route the transformer through ``cameo.models.fast`` and cache the frozen text side of
        every prompt training uses (captions, the empty prompt, class prompts if needed)."""
        c = self.cache
        prompts = [c["text"], c["class_text"]] if self.cfg.prior_preservation > 0 else [c["text"]]
        if "stranger_text" in c:
            prompts.append(c["stranger_text"].flatten(0, 1))  # (n_captions * K, T, D)
        table = torch.cat([*prompts, c["empty"][None]]).to(self.acc.device)
        for m in members(model):
            fast.enable(m).cache_text(table)

    def _make_loop(self) -> OptimisationLoop:
        cfg = self.cfg
        checkpointed = Checkpointed(
            root=self.out / "checkpoints",
            tensors=self._checkpoint_tensors,
            state=self._checkpoint_state,
            restore=self._restore,
            optimizer_state=self._optimizer_state,
            load_optimizer_state=self._load_optimizer_state,
        )
        events = Events(
            on_step=[self._on_step, *self.events.on_step],
            on_checkpoint=list(self.events.on_checkpoint),
        )
        return OptimisationLoop(
            self.opt,
            self.params,
            self._step,
            total_steps=cfg.steps,
            schedule=Schedule(cfg.lr, cfg.warmup, cfg.schedule),
            checkpoint=checkpointed,
            checkpoint_every=cfg.checkpoint_every,
            clip=self._clip,
            zero_grad=self.flat.zero_grad if self.flat is not None else None,
            after_step=self.ema.update if self.ema is not None else None,
            is_main_process=self.acc.is_main_process,
            events=events,
            name=f"train {cfg.name}",
        )

    # ---------------------------------------------------------------------- running

    def stop(self) -> None:
        """Stop after the current step, with a checkpoint (thread-safe)."""
        self._stop_early = True
        if self.loop is not None:
            self.loop.stop()

    def train(self) -> Path:
        threads = torch.get_num_threads()  # setup may change it for the loop; restore it after
        try:
            return self._train()
        finally:
            torch.set_num_threads(threads)

    def _train(self) -> Path:
        self.setup()
        self._write_config()
        self.loop = self._make_loop()
        if self.resume:
            root = self.out / "checkpoints"
            if ckpt.latest(root) is None:
                raise FileNotFoundError(f"--resume: no complete checkpoint in {root}")
            self.loop.resume()
        if self._stop_early:
            self.loop.stop()
        t0, self.patience = time.time(), 0
        with stop_on_sigint(self.loop):
            result = self.loop.run()
        if result.reason == "stopped":
            raise TrainingInterrupted(
                f"stopped at step {result.step}; checkpoint saved, continue with --resume"
            )
        self.acc.wait_for_everyone()
        path = self._save_outputs(time.time() - t0, result)
        self.acc.end_training()
        return path

    def _step(self, step: int) -> dict[str, float]:
        """Forward and backward of one step's batch; the loss, averaged over processes."""
        batch = make_batch(
            self.cache,
            self.cfg,
            step,
            self.acc.process_index,
            self.acc.num_processes,
            self._sigmas_at(step),
        )
        batch = {k: v.to(self.acc.device) for k, v in batch.items()}
        with self.acc.autocast():
            loss = training_loss(self.model, batch, self.cfg)
        if not torch.isfinite(loss):  # before backward: no step is taken on a broken loss
            return {"loss": loss.item()}
        self.acc.backward(loss)
        if self.acc.num_processes > 1:
            return {"loss": self.acc.reduce(loss.detach(), "mean").item()}
        return {"loss": loss.item()}

    def _sigmas_at(self, step: int):
        """The sigma range of ``step``'s batch: the trained expert's, or with both experts the
        side drawn for the step (``TwoExperts.sigmas_for_step``)."""
        model = unwrap_model(self.model)
        if isinstance(model, TwoExperts):
            return model.sigmas_for_step(self.cfg.seed, step, self.cfg.sigma_shift)
        return self.sigma_range

    def _clip(self, params, max_norm: float):
        if self.cfg.fast:
            return flat.clip_grad_norm_(self.acc, params, max_norm)
        return self.acc.clip_grad_norm_(params, max_norm)

    def _on_step(self, done: int, logs: dict[str, float]) -> bool:
        """Log the step, validate when due; True asks the loop to stop early."""
        loss = logs["loss"]
        if self.acc.is_main_process:
            with open(self.out / "losses.jsonl", "a") as f:
                f.write(json.dumps({"step": done - 1, "loss": loss}) + "\n")
        self.acc.log({"loss": loss, "lr": self.opt.param_groups[0]["lr"]}, step=done - 1)
        if not self._validation_due(done):
            return False
        improved = self._validate(done)
        if improved is None:  # nothing judged: no best checkpoint to keep, no early stop
            return False
        self.patience = 0 if improved else self.patience + 1
        if self.cfg.early_stop and self.patience >= self.cfg.early_stop:
            self.log(f"identity stopped improving; early stop at step {done}")
            return True
        return False

    def _validation_due(self, done: int) -> bool:
        every = self.cfg.validate_every
        return self.validator is not None and (
            done == self.cfg.steps or (every > 0 and done % every == 0)
        )

    def _validate(self, done: int) -> bool | None:
        """Validate; whether the identity score improved on the best (None: no score)."""
        metrics = self.validator.run(done)
        if metrics is None:
            return None
        self.acc.log({f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=done)
        for fn in self.events.on_validation:
            fn(done, metrics)
        score = metrics.get("identity_normalised")
        self.log(f"step {done}: {describe_validation(metrics)}")
        if score is None:  # e.g. the face judge found no face in the previews
            return None
        if score > self.best["score"] + 1e-3:
            self.best.update(
                score=score,
                step=done,
                metrics=metrics,
                tensors=adapter_tensors(unwrap_model(self.model)),
            )
            return True
        return False

    # ------------------------------------------------------------------- checkpoints

    def _checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        model = unwrap_model(self.model)
        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if self.ema is not None:
            tensors.update(self.ema.tensors())
        if self.best["tensors"] is not None:
            tensors.update({f"best::{k}": v for k, v in self.best["tensors"].items()})
        return tensors

    def _checkpoint_state(self) -> dict:
        state = {"best": {k: self.best[k] for k in ("score", "step", "metrics")}}
        if self.best["tensors"] is not None:
            state["best_tensors"] = True
        return state

    def _restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        model = unwrap_model(self.model)
        with torch.no_grad():  # in place on the parameter: its version moves, caches follow
            for n, p in model.named_parameters():
                if n in tensors:
                    p.copy_(tensors[n])
            if self.ema is not None:
                self.ema.load(tensors)
        self.best.update({k: state["best"][k] for k in ("score", "step", "metrics")})
        if state.get("best_tensors"):
            self.best["tensors"] = {
                k.removeprefix("best::"): v for k, v in tensors.items() if k.startswith("best::")
            }

    def _optimizer_state(self) -> dict:
        optim = self.opt.state_dict()  # checkpoints keep the per-tensor layout either way
        return self.flat.per_tensor_state(optim) if self.flat is not None else optim

    def _load_optimizer_state(self, optim: dict) -> None:
        self.opt.load_state_dict(self.flat.flat_state(optim) if self.flat is not None else optim)

    # ----------------------------------------------------------------------- outputs

    def _save_outputs(self, seconds: float, result: LoopResult) -> Path:
        if not self.acc.is_main_process:
            return self.lora_path
        cfg, model = self.cfg, unwrap_model(self.model)
        if self.ema is not None:  # in place, not .data: the version must move for caches
            self.ema.copy_to(lora_parameters(model))
        last = adapter_tensors(model)
        # both experts: one file, and its halves for the tools that load one expert a file
        write = save_expert_files if isinstance(model, TwoExperts) else save_lora_file
        meta = self._file_metadata(seconds)
        chosen, chosen_meta = (
            last,
            {**meta, "step": cfg.steps, "metrics": self.best["metrics"] or {}},
        )
        if self.best["tensors"] is not None and self.ema is None:
            chosen = self.best["tensors"]
            chosen_meta = {**meta, "step": self.best["step"], "metrics": self.best["metrics"]}
            write(
                self.out / f"{cfg.name}-last.safetensors",
                last,
                self.spec,
                {**meta, "step": cfg.steps},
                overwrite=True,
            )
        write(self.lora_path, chosen, self.spec, chosen_meta, overwrite=True)
        summary = {
            "best_step": chosen_meta["step"],
            "metrics": chosen_meta["metrics"],
            "train_seconds": meta["train_seconds"],
        }
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=1))
        self.log(f"LoRA written to {self.lora_path} (step {chosen_meta['step']}, {seconds:.0f} s)")
        return self.lora_path

    def _file_metadata(self, seconds: float) -> dict:
        cfg = self.cfg
        two_experts = getattr(self.pipe, "transformer_2", None) is not None
        meta = {
            "name": cfg.name,
            "trigger": cfg.trigger,
            "base": str(cfg.base),
            "base_hash": base_hash(self.base_dir),
            "config": asdict(cfg),
            "train_seconds": round(seconds, 1),
            "processes": self.acc.num_processes,  # joined into one run (torchrun, accelerate)
            "expert": cfg.expert if two_experts else "single",
        }
        if cfg.orthogonal_slot >= 0:
            meta["orthogonal_slot"] = str(cfg.orthogonal_slot)
            meta["orthogonal_seed"] = str(cfg.orthogonal_seed)
        return meta

    def _write_config(self) -> None:
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
            (self.out / "dataset_report.txt").write_text(self.report.format() + "\n")
            self.report.photos.write(self.out)  # photo_report.txt and .json


def run_training(
    cfg: TrainConfig, resume: bool = False, log=None, events: Events | None = None
) -> Path:
    """Train one LoRA, drawing a progress bar (the command line's and ``cameo.train``'s view);
    returns the path of the written file. ``events`` listen to the run as well."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    trainer = Trainer(cfg, resume=resume, log=log, events=events)
    bar = ProgressBar(cfg.steps, f"train {cfg.name}", disable=not trainer.acc.is_main_process)
    trainer.events.on_step.append(bar)
    log(trainer.report.format())
    try:
        return trainer.train()
    finally:
        bar.close()
