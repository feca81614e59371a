"""Generation: the options, LoRA loading and scales, regions for several people, sampling."""

from .config import (
    SAMPLERS,
    GenerateConfig,
    auto_region_prompts,
    parse_lora_arg,
    region_prompts,
)
from .loras import LoadedLoras, apply_loras
from .sampling import generate_clip, generate_frames, generate_to_files, sampling_scheduler

__all__ = [
    "SAMPLERS",
    "GenerateConfig",
    "LoadedLoras",
    "apply_loras",
    "auto_region_prompts",
    "generate_clip",
    "generate_frames",
    "generate_to_files",
    "parse_lora_arg",
    "region_prompts",
    "sampling_scheduler",
]
