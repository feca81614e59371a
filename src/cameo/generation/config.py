"""``GenerateConfig``: the options of ``cameo generate``, validated in one place and saved as
JSON beside the clip; the parsers of its LoRA and region arguments."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..compose import MIXES
from ..models import resolve_base
from ..models.memory import DTYPES, OFFLOADS, resolve_device
from ..models.profiles import detect_profile
from ..world.captions import split_pair_caption

SAMPLERS = ("base", "euler", "unipc", "dpm++")


@dataclass
class GenerateConfig:
    """Options of ``cameo generate``; saved as JSON beside the clip."""

    prompt: str = field(default="", metadata={"help": "what to show"})
    out: str = field(
        default="clip.mp4",
        metadata={"help": "output MP4 path; a .gif and a .png contact sheet go beside it"},
    )
    base: str = field(
        default="cameo-tiny",
        metadata={"help": "base model: cameo-tiny or a Wan diffusers directory"},
    )
    frames: int | None = field(
        default=None,
        metadata={"help": "number of frames, 4k+1 (default: the base's own: 17; Wan 81)"},
    )
    height: int | None = field(
        default=None,
        metadata={
            "help": "height in pixels, multiple of 16 (default: the base's own: 64; Wan 480)"
        },
    )
    width: int | None = field(
        default=None,
        metadata={
            "help": "width in pixels, multiple of 16; twice the height for two people "
            "(default: the base's own: 64; Wan 832)"
        },
    )
    steps: int = field(default=20, metadata={"help": "sampling steps"})
    guidance: float = field(default=5.0, metadata={"help": "classifier-free guidance scale"})
    sampler: str = field(
        default="base",
        metadata={
            "help": "flow-matching sampler: base (the one the model ships; cameo-tiny: euler), "
            "euler, unipc (Wan's), dpm++"
        },
    )
    shift: float = field(
        default=0.0,
        metadata={
            "help": "sampling sigma shift (larger: more steps spent at high noise); 0 keeps the "
            "base's scheduler's own (cameo-tiny: 2; Wan's 480p checkpoints: 3)"
        },
    )
    seed: int = field(default=0, metadata={"help": "random seed; same seed, same clip"})
    fps: int | None = field(
        default=None,
        metadata={
            "help": "frames per second of the written video (default: the base's: 8; Wan 16)"
        },
    )
    negative: str = field(default="", metadata={"help": "negative prompt"})
    image: str = field(
        default="",
        metadata={
            "help": "first frame to animate (image-to-video bases: Wan 2.1/2.2 I2V, TI2V-5B, "
            "cameo-tiny-i2v): a photo, cropped to the clip's aspect; the clip starts from it"
        },
    )
    lora: list[str] = field(
        default_factory=list,
        metadata={"help": "LoRA file, optionally with a scale: mike.safetensors:0.8 (repeatable)"},
    )
    fuse: bool = field(
        default=False, metadata={"help": "merge the LoRAs into the weights (no per-step overhead)"}
    )
    fast: bool = field(
        default=True,
        metadata={
            "help": "fast path (cameo.models.fast); --no-fast runs the plain diffusers forward"
        },
    )
    mix: str = field(
        default="linear",
        metadata={
            "help": "how several LoRAs combine: linear, cat, svd, ties, dare_linear, regional, "
            "windows (each person denoised in a window of their own, reading their side of an "
            "'on the left ... on the right ...' prompt unless given --region-prompt)"
        },
    )
    region: list[str] = field(
        default_factory=list,
        metadata={
            "help": "with --mix regional or windows: TRIGGER=left|right|top|bottom or "
            "TRIGGER=x0,y0,x1,y1 (repeatable)"
        },
    )
    region_prompt: list[str] = field(
        default_factory=list,
        metadata={
            "help": "WHERE=PROMPT: the video tokens of a region (left, right, top, bottom or "
            "x0,y0,x1,y1) read this prompt instead of the main one (repeatable); 'auto' takes "
            "left and right from a prompt that says 'on the left ... on the right ...'"
        },
    )
    device: str = field(
        default="auto",
        metadata={"help": "where to run: auto (the GPU when there is one), cpu, cuda, cuda:N"},
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "weights' precision: auto (bf16 for a Wan base on a GPU; fp32 on the CPU and "
            "for cameo-tiny), fp32, bf16, fp16"
        },
    )
    fp8_base: bool = field(
        default=False,
        metadata={
            "help": "store the transformer's weights in float8 (half of bf16's memory), "
            "computed in --dtype layer by layer"
        },
    )
    offload: str = field(
        default="auto",
        metadata={
            "help": "what rests on the CPU while the GPU works: auto (nothing if the model fits, "
            "else model), none, model (each component visits in turn; Wan 2.2's experts too), "
            "block (one transformer block at a time), leaf (one layer at a time)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace existing output files"})

    def resolved(self) -> GenerateConfig:
        """This config with what it leaves to the base (frames, height, width, fps) taken
        from the base's profile (``cameo.models.profiles``); itself when nothing is left."""
        if None not in (self.frames, self.height, self.width, self.fps):
            return self
        p = detect_profile(resolve_base(self.base))
        return replace(
            self,
            frames=self.frames or p.sample_frames,
            height=self.height or p.height,
            width=self.width or p.width,
            fps=self.fps or p.fps,
        )

    def validate(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the prompt is empty")
        if self.frames is not None and (self.frames < 1 or (self.frames - 1) % 4):
            raise ValueError(f"--frames must be 4k+1 (1, 5, 9, 13, 17, ...), not {self.frames}")
        for side in (self.height, self.width):
            if side is not None and (side % 16 or side < 16):
                raise ValueError("--height and --width must be positive multiples of 16")
        if self.steps < 1:
            raise ValueError("--steps must be at least 1")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"--sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}"
            )
        if self.shift < 0:
            raise ValueError(f"--shift must be positive, or 0 for the base's own; not {self.shift}")
        if self.image and not Path(self.image).is_file():
            raise ValueError(f"--image {self.image} does not exist")
        if self.image and (self.region or self.mix in ("regional", "windows")):
            raise ValueError("--region and --mix regional/windows are for text-to-video clips")
        for spec in self.lora:
            path, _ = parse_lora_arg(spec)
            if not Path(path).is_file():
                raise ValueError(f"LoRA file {path} does not exist")

        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"--dtype must be auto, {', '.join(DTYPES)}; not {self.dtype!r}")
        if self.offload not in ("auto", *OFFLOADS):
            raise ValueError(f"--offload must be auto, {', '.join(OFFLOADS)}; not {self.offload!r}")
        resolve_device(self.device)  # raises on a bad name, or CUDA where there is none
        if self.mix not in MIXES:
            raise ValueError(f"--mix must be one of {', '.join(MIXES)}, not {self.mix!r}")
        for r in self.region:
            parse_region(r)
        region_prompts(self)  # raises on a bad WHERE=PROMPT, or 'auto' without left/right


def parse_region(spec: str) -> tuple[str, str | tuple[float, float, float, float]]:
    """'mike=left' -> ('mike', 'left'); 'anna=0.5,0,1,1' -> ('anna', (0.5, 0.0, 1.0, 1.0))."""
    name, sep, where = spec.partition("=")
    if not sep or not name:
        raise ValueError(
            f"--region {spec!r}: expected TRIGGER=left|right|top|bottom or TRIGGER=x0,y0,x1,y1"
        )
    return name, _parse_where(where, f"--region {spec!r}")


def parse_region_prompt(spec: str) -> tuple[str | tuple[float, float, float, float], str]:
    """'left=mike, speaking' -> ('left', 'mike, speaking'); a box works as in ``parse_region``."""
    where, sep, prompt = spec.partition("=")
    if not sep or not prompt.strip():
        raise ValueError(
            f"--region-prompt {spec!r}: expected WHERE=PROMPT, WHERE left|right|top|bottom or x0,y0,x1,y1"
        )
    return _parse_where(where.strip(), f"--region-prompt {spec!r}"), prompt.strip()


def region_prompts(cfg: GenerateConfig) -> list[str]:
    """The WHERE=PROMPT list to use: ``cfg.region_prompt`` as given, with 'auto' replaced by
    the left and right prompts that ``auto_region_prompts`` reads from the main prompt. With
    ``--mix windows`` and none given, 'auto' where the prompt names both sides: a window holds
    one person, so it should read that person's words, not the whole two-person prompt."""
    if not cfg.region_prompt and cfg.mix == "windows":
        return auto_region_prompts(cfg.prompt) or []
    out = []
    for spec in cfg.region_prompt:
        if spec.strip() == "auto":
            found = auto_region_prompts(cfg.prompt)
            if found is None:
                raise ValueError(
                    "--region-prompt auto needs a prompt that says 'on the left ... on the "
                    f"right ...'; {cfg.prompt!r} does not"
                )
            out += found
        else:
            parse_region_prompt(spec)
            out.append(spec)
    return out


def auto_region_prompts(prompt: str) -> list[str] | None:
    """'two people in front of a red wall: on the left mike speaking, on the right anna silent'
    -> ['left=mike speaking, in front of a red wall', 'right=anna silent, in front of a red
    wall']: each side's words plus the shared scene (``world.captions.split_pair_caption``),
    since a region holds one person. None when the prompt does not name both sides."""
    parts = split_pair_caption(prompt)
    if parts is None:
        return None
    left, right, scene = parts
    return [
        f"{side}={words}, {scene}" if scene else f"{side}={words}"
        for side, words in (("left", left), ("right", right))
    ]


def _parse_where(where: str, what: str) -> str | tuple[float, float, float, float]:
    if where in ("left", "right", "top", "bottom", "all"):
        return where
    try:
        box = tuple(float(v) for v in where.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(
            f"{what}: a region is left|right|top|bottom, or a box x0,y0,x1,y1 with "
            "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
        )
    return box  # type: ignore[return-value]


def parse_lora_arg(spec: str) -> tuple[str, float]:
    """'mike.safetensors:0.8' -> ('mike.safetensors', 0.8); no scale means 1.0."""
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0
