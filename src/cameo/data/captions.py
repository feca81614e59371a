"""Captions of a photo folder: a same-name ``.txt``, or ``metadata.jsonl`` / ``metadata.csv``
rows (``file_name`` plus ``text`` or ``caption``); the trigger word put in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

TRIGGER_PLACEHOLDER = "[trigger]"
TEMPLATE_CAPTION = f"a photo of {TRIGGER_PLACEHOLDER}"


def apply_trigger(caption: str, trigger: str) -> str:
    """Put the trigger word in: replace ``[trigger]``, or prepend it when absent."""
    caption = " ".join(caption.split())
    if not trigger:
        return caption
    if TRIGGER_PLACEHOLDER in caption:
        return caption.replace(TRIGGER_PLACEHOLDER, trigger)
    if trigger.lower() in caption.lower().replace(",", " ").split():
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def metadata_captions(folder: Path) -> dict[str, str]:
    """file name -> caption from ``metadata.jsonl`` and ``metadata.csv`` (csv wins)."""
    caps: dict[str, str] = {}
    jl = folder / "metadata.jsonl"
    if jl.is_file():
        for line in jl.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "file_name" in row:
                caps[str(row["file_name"])] = str(row.get("text") or row.get("caption") or "")
    cv = folder / "metadata.csv"
    if cv.is_file():
        with open(cv, newline="", errors="replace") as f:
            for row in csv.DictReader(f):
                if row.get("file_name"):
                    caps[row["file_name"]] = row.get("text") or row.get("caption") or ""
    return caps


def caption_for(path: Path, meta: dict[str, str], trigger: str) -> tuple[str, str, str]:
    """(caption with the trigger, the user's own text or "" when none, a note)."""
    txt = path.with_suffix(".txt")
    text, note = None, ""
    if txt.is_file():
        raw = txt.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, note = raw.decode("latin-1"), "caption not UTF-8, read as Latin-1"
    elif path.name in meta:
        text = meta[path.name]
    if text is None or not text.strip():
        note = (
            "no caption: template caption used"
            if text is None
            else "empty caption: template caption used"
        )
        return apply_trigger(TEMPLATE_CAPTION, trigger), "", note
    return apply_trigger(text, trigger), text, note
