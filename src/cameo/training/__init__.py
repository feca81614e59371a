"""LoRA training: config, cached inputs, objective, the shared optimisation loop, the trainer."""

from .config import PER_INVOCATION, TrainConfig
from .trainer import Trainer, TrainingInterrupted, run_training

__all__ = ["PER_INVOCATION", "TrainConfig", "Trainer", "TrainingInterrupted", "run_training"]
