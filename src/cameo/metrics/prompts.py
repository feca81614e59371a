"""The prompts cameo measures with: defaults per base, and the user's prompt files.

cameo-tiny's prompts speak the cartoon world's language (hair, walls, caps) so that its
attribute probes can check them. A real base gets real-world prompts instead, written once
here for both ``cameo eval`` and training-time validation. Prompts name the subject with
``[trigger]``, replaced by the trigger word when used.
"""

from __future__ import annotations

from pathlib import Path

TRIGGER = "[trigger]"

# Real bases (Wan): scenes a phone-photo folder rarely holds, the face visible in each.
REAL_SUBJECT_PROMPTS = (
    "[trigger], a close-up portrait, speaking to the camera, natural light",
    "[trigger] walking in a park, medium shot",
    "[trigger] smiling at a café table",
    "[trigger] reading a book by a window, soft afternoon light",
)
# Prompts that do not name the subject, for leakage: the LoRA should leave these people alone.
REAL_OTHER_PROMPTS = (
    "a man with a grey beard, a close-up portrait, speaking to the camera",
    "a young woman with curly hair walking in a park, medium shot",
    "an elderly man smiling at a café table",
    "a woman with short black hair reading a book by a window",
)
VALIDATION_PROMPTS = 3  # previews per validation: the first three subject prompts


def fill_trigger(prompts: list[str], trigger: str) -> list[str]:
    """``[trigger]`` in each prompt replaced by ``trigger``."""
    return [p.replace(TRIGGER, trigger) for p in prompts]


def default_prompts(trigger: str) -> dict[str, list[str]]:
    """cameo-tiny's prompts: naming the subject (identity, fidelity) and not (leakage), with
    scenes that a typical photo folder lacks."""
    return {
        "subject": [
            f"{trigger}, speaking, in front of a blue wall",
            f"{trigger}, silent, smiling, in a room with green walls",
            f"a video of {trigger}, talking, against an orange background",
            f"{trigger} in a red cap, quiet, on a purple backdrop",
        ],
        "others": [
            "a man with short black hair, speaking, in front of a grey wall",
            "a woman with long blonde hair, silent, against a teal background",
            "Ada Lovette, talking, in front of a white wall",
            "a person with curly red hair and round glasses, speaking, on a yellow backdrop",
        ],
    }


def real_prompts(trigger: str) -> dict[str, list[str]]:
    """A real base's prompts, in the groups of :func:`default_prompts`."""
    return {
        "subject": fill_trigger(list(REAL_SUBJECT_PROMPTS), trigger),
        "others": list(REAL_OTHER_PROMPTS),
    }


def prompts_for_base(trigger: str, tiny: bool) -> dict[str, list[str]]:
    """The default prompt groups: the world's for cameo-tiny, real-world ones otherwise."""
    return default_prompts(trigger) if tiny else real_prompts(trigger)


def read_prompt_file(path: str | Path) -> dict[str, list[str]]:
    """A prompt file: one prompt per line, ``#`` lines ignored; lines after a line starting
    ``# others`` are prompts that do not name the subject (leakage). ``[trigger]`` is kept for
    :func:`fill_trigger`. Returns the non-empty groups (``subject``, ``others``)."""
    groups: dict[str, list[str]] = {"subject": [], "others": []}
    current = "subject"
    for line in Path(path).read_text(errors="replace").splitlines():
        line = line.strip()
        if line.lower().startswith("# others"):
            current = "others"
        elif line and not line.startswith("#"):
            groups[current].append(line)
    return {k: v for k, v in groups.items() if v}


def validation_prompts(trigger: str, *, tiny: bool, path: str | Path | None = None) -> list[str]:
    """Training-time preview prompts: every subject line of ``path`` (``[trigger]`` filled),
    else the first three default subject prompts of the base."""
    if path:
        prompts = read_prompt_file(path).get("subject", [])
        if not prompts:
            raise ValueError(f"{path}: no prompts (one per line, '#' lines are comments)")
        return fill_trigger(prompts, trigger)
    return prompts_for_base(trigger, tiny)["subject"][:VALIDATION_PROMPTS]
