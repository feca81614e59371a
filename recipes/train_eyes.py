"""Train cameo's eyes: the identity encoder and the attribute probes, on world renders.

    python recipes/train_eyes.py --out runs/eyes --steps 1500 --checkpoint runs/eyes-checkpoints

Both nets (or one of them, ``--only``) train under cameo's optimisation loop: AdamW, 50 warm-up
steps then cosine decay. With ``--checkpoint`` the loop saves the nets, the optimiser and the
batch generator every ``--checkpoint-every`` steps, and running the same command again resumes
from the newest checkpoint (only under the same settings). The nets are then validated on
held-out people and written with a report and a card. The settings, data, losses and card are
``cameo.metrics.train_eyes``; this file is the loop and the command line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cameo.cli.args import EXIT_INTERRUPTED, add_dataclass_args, dataclass_from_args
from cameo.metrics.nets import AttributeProbe, IdentityEncoder, load_identity_encoder
from cameo.metrics.train_eyes import (
    EyesConfig,
    build_bank,
    class_weights,
    identity_batch_loss,
    machine_description,
    parse_head_weights,
    probe_batch_loss,
    run_settings,
    ship_eyes,
)
from cameo.metrics.validate import validate_eyes
from cameo.training import TrainingInterrupted
from cameo.training.loop import (
    Checkpointed,
    Events,
    LoopResult,
    OptimisationLoop,
    Schedule,
    stop_on_sigint,
)

WARMUP = 50  # steps of linear warm-up before the cosine decay
COMMAND = ["python", "recipes/train_eyes.py"]


class EyesTraining:
    """One run: ``setup()`` renders (or loads) the bank and builds the nets, the optimiser and
    the loop; ``train()`` runs the loop (resuming from ``cfg.checkpoint`` if it holds one);
    ``ship()`` validates and writes the weights, report and card. ``stop()`` asks the run to
    stop after the current step, with a checkpoint."""

    def __init__(self, cfg: EyesConfig, events: Events | None = None):
        self.cfg, self.events = cfg, events or Events()
        self.out = Path(cfg.out)
        self.train_id = cfg.only in ("", "identity")
        self.train_probe = cfg.only in ("", "probes")
        self.minutes_before = 0.0  # spent by the runs this one resumes
        self.t0 = time.time()

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.bank = build_bank(cfg)
        self.enc = (
            IdentityEncoder(cfg.encoder_width).train()
            if self.train_id
            else load_identity_encoder(self.out / "identity.safetensors")
        )
        probe = AttributeProbe(cfg.probe_width, cfg.probe_norm, cfg.probe_stem_norm, cfg.probe_pool)
        self.probe = probe.train().to(memory_format=torch.channels_last)
        params = [
            *(self.enc.parameters() if self.train_id else []),
            *(self.probe.parameters() if self.train_probe else []),
        ]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
        self.g = torch.Generator().manual_seed(cfg.seed)  # draws batches and augmentation
        self.weights = parse_head_weights(cfg.head_weights)
        labels = self.bank["labels"]
        self.balance = class_weights(labels, cfg.class_balance) if cfg.class_balance else None
        ids = self.bank["ids"]
        self.by_id = (
            [np.flatnonzero(ids == i) for i in range(cfg.identities)] if self.train_id else []
        )
        self.loop = OptimisationLoop(
            opt,
            params,
            self.step,
            total_steps=cfg.steps,
            schedule=Schedule(cfg.lr, WARMUP),
            checkpoint=self._checkpointed() if cfg.checkpoint else None,
            checkpoint_every=cfg.checkpoint_every,
            max_grad_norm=None,
            events=Events(
                on_step=[self._show, *self.events.on_step],
                on_checkpoint=list(self.events.on_checkpoint),
            ),
            name=f"eyes {cfg.only or 'both'}",
        )

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """Forward and backward of one step: the identity loss and the probes' loss."""
        cfg, g = self.cfg, self.g
        id_loss = (
            identity_batch_loss(self.enc, self.bank, self.by_id, cfg, step, g)
            if self.train_id
            else torch.zeros(())
        )
        p_loss = (
            probe_batch_loss(self.probe, self.bank, cfg, g, self.weights, self.balance)
            if self.train_probe
            else torch.zeros(())
        )
        (id_loss + p_loss).backward()
        return {"id": id_loss.detach(), "probe": p_loss.detach()}

    def stop(self) -> None:
        """Stop after the current step, with a checkpoint (thread-safe)."""
        self.loop.stop()

    def train(self) -> LoopResult:
        cfg = self.cfg
        self.loop.resume()  # a no-op without --checkpoint or before its first checkpoint
        self.bar = tqdm(
            desc=f"eyes {cfg.only or 'both'}",
            initial=self.loop.step,
            total=cfg.steps,
            dynamic_ncols=True,
        )
        with stop_on_sigint(self.loop):
            result = self.loop.run()
        self.bar.close()
        if result.reason == "stopped":
            kept = f"checkpoint in {cfg.checkpoint}" if cfg.checkpoint else "no --checkpoint"
            raise TrainingInterrupted(f"stopped at step {result.step}; {kept}")
        return result

    def ship(self, command: str) -> dict:
        """Validate on held-out people; write the trained nets, report.json and the card."""
        self.enc.eval()
        self.probe.eval()
        report = validate_eyes(self.enc, self.probe)
        card = {
            "config": asdict(self.cfg),
            "command": command,
            "train_minutes": round(self.minutes(), 1),
            "machine": machine_description(self.cfg.threads),
            "validation": report,
        }
        if self.cfg.note:
            card["note"] = self.cfg.note
        nets = {}
        if self.train_id:
            nets["identity.safetensors"] = self.enc
        if self.train_probe:
            nets["probes.safetensors"] = self.probe
        return ship_eyes(self.out, card, nets)

    def minutes(self) -> float:
        return self.minutes_before + (time.time() - self.t0) / 60

    # ------------------------------------------------------------------- checkpoints

    def _checkpointed(self) -> Checkpointed:
        return Checkpointed(
            root=Path(self.cfg.checkpoint),
            tensors=self._tensors,
            state=lambda: {"settings": run_settings(self.cfg), "minutes": self.minutes()},
            restore=self._restore,
            generators=[self.g],
        )

    def _tensors(self) -> dict[str, torch.Tensor]:
        nets = {"encoder": self.enc, "probe": self.probe}
        return {f"{n}.{k}": v for n, net in nets.items() for k, v in net.state_dict().items()}

    def _restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        if state.get("settings") != run_settings(self.cfg):
            raise ValueError(
                f"the checkpoint in {self.cfg.checkpoint} was made with other settings; "
                "delete it or pass those settings"
            )
        for name, net in (("encoder", self.enc), ("probe", self.probe)):
            prefix = f"{name}."
            net.load_state_dict(
                {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            )
        self.minutes_before = float(state["minutes"])

    def _show(self, done: int, logs: dict[str, float]) -> None:
        self.bar.update(1)
        if logs:  # the loop reads the values back only on the steps it checks
            self.bar.set_postfix(id=f"{logs['id']:.3f}", probe=f"{logs['probe']:.3f}")


def train_eyes(cfg: EyesConfig, command: str = "", events: Events | None = None) -> dict:
    """Train, validate and write the eyes of ``cfg``; returns their card. ``command``: the
    command line recorded in the card. Raises ``TrainingInterrupted`` when stopped early."""
    run = EyesTraining(cfg, events)
    run.setup()
    run.train()
    return run.ship(command or shlex.join(COMMAND))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog=shlex.join(COMMAND),
        description="Train cameo's eyes (identity encoder and attribute probes) on world renders.",
    )
    add_dataclass_args(parser, EyesConfig)
    cfg = dataclass_from_args(EyesConfig, parser.parse_args(argv))
    try:
        card = train_eyes(cfg, command=shlex.join([*COMMAND, *argv]))
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return EXIT_INTERRUPTED
    v = card["validation"]
    print(
        f"identification top-1 {v['identification_top1']:.3f}, verification AUC "
        f"{v['verification_auc']:.4f}, trained in {card['train_minutes']} min; weights in {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
