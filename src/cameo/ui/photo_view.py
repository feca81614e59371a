"""The photo check as the Photos tab shows it: one card per file with a thumbnail (every face
found outlined thin, the person's face thick, the training crop dashed), whether the file is
used or skipped and why, and its warnings in plain words; above them the report's summary.

Thumbnails are drawn with Pillow into a folder of the session (``thumbs/``, beside
``photos/``: never inside it, where they would count as photos) and sent inside the page as
data URIs, so the page fetches nothing. Their names carry a hash of the file and of what is
drawn, so an unchanged photo is not drawn again. Nothing here imports Gradio.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..data import PhotoEntry, PhotoReport, open_image
from ..data.clips import clip_windows, iter_windows, probe_clip
from ..data.images import UnreadableImage
from .workspace import inside

THUMB_SIDE = 256  # longest side of a thumbnail, in pixels
FACE_COLOUR = (255, 214, 10)  # every face found: thin yellow
SUBJECT_COLOUR = (46, 230, 107)  # the person's face: thick green
CROP_COLOUR = (62, 197, 255)  # what is trained: dashed blue
DARK = (0, 0, 0)
DASH, GAP = 7, 5

# Each warning code in a few plain words (the report's message follows it).
LABELS = {
    "no_face": "No face found",
    "several_faces": "Several faces",
    "others_in_crop": "Other people in the crop",
    "face_small": "Face too small",
    "blurry": "Blurry",
    "underexposed": "Too dark",
    "overexposed": "Too bright",
    "near_duplicate": "Near duplicate",
    "other_person": "Maybe someone else",
    "caption_missing": "No caption",
    "caption_look": "Caption describes the look",
}


@dataclass
class Thumb:
    """One file's card: its entry in the report and its drawn thumbnail (None: no preview)."""

    entry: PhotoEntry
    path: Path | None


# ------------------------------------------------------------------------- drawing


def _scaled(box: Sequence[float], s: float) -> tuple[float, float, float, float]:
    """A box in full-resolution pixels (right/bottom exclusive) as a rectangle to draw on a
    picture ``s`` times that size (right/bottom inclusive)."""
    left, top, right, bottom = (v * s for v in box)
    return left, top, max(left, right - 1), max(top, bottom - 1)


def _dashed(draw: ImageDraw.ImageDraw, box, colour, width: int) -> None:
    """A rectangle of dashes in ``colour`` over a dark solid line, visible on any picture."""
    left, top, right, bottom = box
    draw.rectangle(box, outline=DARK, width=width)
    for (x0, y0), (x1, y1) in (
        ((left, top), (right, top)),
        ((right, top), (right, bottom)),
        ((right, bottom), (left, bottom)),
        ((left, bottom), (left, top)),
    ):
        length = max(abs(x1 - x0), abs(y1 - y0))
        at = 0.0
        while at < length:
            end = min(at + DASH, length)
            a, b = at / length, end / length
            draw.line(
                [
                    (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                    (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                ],
                fill=colour,
                width=width,
            )
            at += DASH + GAP


def _outlined(draw: ImageDraw.ImageDraw, box, colour, width: int) -> None:
    """A solid rectangle with a dark edge on both sides of it."""
    left, top, right, bottom = box
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=DARK, width=width + 2)
    draw.rectangle(box, outline=colour, width=width)


def draw_boxes(image: Image.Image, entry: PhotoEntry) -> Image.Image:
    """``image`` (the photo at any scale) with the entry's faces and crop drawn on it, the
    faces numbered as the warnings number them when there are several."""
    image = image.convert("RGB")
    if entry.size is None:
        return image
    s = image.width / entry.size[0]
    draw = ImageDraw.Draw(image)
    if entry.crop is not None:
        _dashed(draw, _scaled(entry.crop, s), CROP_COLOUR, 2)
    font = ImageFont.load_default(size=13)
    for i, face in enumerate(entry.faces):
        if i == entry.subject:
            continue
        _outlined(draw, _scaled(face, s), FACE_COLOUR, 2)
    if entry.subject is not None and entry.subject < len(entry.faces):
        _outlined(draw, _scaled(entry.faces[entry.subject], s), SUBJECT_COLOUR, 4)
    if len(entry.faces) > 1:
        for i, face in enumerate(entry.faces):
            left, top, _, _ = _scaled(face, s)
            colour = SUBJECT_COLOUR if i == entry.subject else FACE_COLOUR
            at = (max(left, 0), max(top - 16, 0))
            draw.text(at, f"#{i + 1}", fill=colour, font=font, stroke_width=2, stroke_fill=DARK)
    return image


def _picture(path: Path, entry: PhotoEntry, report: PhotoReport) -> Image.Image:
    """The picture the entry describes, small: the photo upright, or for a clip the middle
    frame of its first window (where its boxes were measured)."""
    if entry.kind == "clip":
        t = report.target
        info = probe_clip(path)
        windows = clip_windows(info.frames, info.fps, t.frames, t.fps)[:1]
        for frames in iter_windows(path, windows, 2 * THUMB_SIDE):
            return frames[len(frames) // 2]
        raise UnreadableImage("no frames")
    return open_image(path, 2 * THUMB_SIDE).image


def _placeholder(text: str) -> Image.Image:
    tile = Image.new("RGB", (THUMB_SIDE, THUMB_SIDE * 3 // 4), (90, 90, 96))
    draw = ImageDraw.Draw(tile)
    draw.text(
        (THUMB_SIDE // 2, THUMB_SIDE * 3 // 8),
        text,
        fill=(235, 235, 235),
        font=ImageFont.load_default(size=16),
        anchor="mm",
    )
    return tile


def _thumb_name(path: Path, entry: PhotoEntry) -> str:
    """``<stem>-<hash>.jpg``: the hash covers the file (name, size, time) and what is drawn."""
    stat = path.stat() if path.exists() else None
    drawn = {
        "file": [entry.file, stat and stat.st_size, stat and stat.st_mtime_ns],
        "size": entry.size,
        "faces": entry.faces,
        "subject": entry.subject,
        "crop": entry.crop,
        "used": entry.used,
    }
    digest = hashlib.sha1(json.dumps(drawn, default=list).encode()).hexdigest()[:12]
    return f"{path.stem[:60]}-{digest}.jpg"


def draw_thumbnails(report: PhotoReport, photos: Path, out: Path) -> list[Thumb]:
    """A thumbnail per entry of ``report`` (files of ``photos``) in ``out``; thumbnails of
    files no longer there, or drawn differently, are removed."""
    out.mkdir(parents=True, exist_ok=True)
    thumbs, keep = [], set()
    for entry in report.entries:
        src = photos / entry.file
        dest = out / _thumb_name(src, entry)
        if not inside(src, photos) or not inside(dest, out):
            thumbs.append(Thumb(entry, None))
            continue
        if not dest.is_file():
            try:
                picture = _picture(src, entry, report) if entry.kind != "other" else None
            except (UnreadableImage, OSError, ValueError):
                picture = None
            if picture is None:
                image = _placeholder("no preview")
            else:
                picture = picture.copy()
                picture.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
                image = draw_boxes(picture, entry)
            part = dest.with_suffix(".part")
            image.save(part, "JPEG", quality=85)
            os.replace(part, dest)  # a page reading the folder never sees half a file
        keep.add(dest.name)
        thumbs.append(Thumb(entry, dest))
    for old in out.glob("*.jpg"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return thumbs


# -------------------------------------------------------------------------- the page


def status_line(e: PhotoEntry) -> str:
    """Used or skipped, in words: what the file gives, or why it gives nothing."""
    if not e.used:
        return f"Skipped: {e.reason}."
    parts = []
    if e.kind == "clip":
        parts.append(f"{e.windows} window{'s' * (e.windows != 1)} of {e.frames} frames")
    if e.size:
        parts.append(f"{e.size[0]}×{e.size[1]}")
    n = len(e.faces)
    if n == 1:
        parts.append("the person's face found")
    elif n > 1 and e.subject is not None:
        parts.append(f"{n} faces, the person is #{e.subject + 1}")
    if e.bucket is not None and e.crop is not None:
        cw, ch = e.crop[2] - e.crop[0], e.crop[3] - e.crop[1]
        grown = f", enlarged {e.upscale:.1f}×" if e.upscale and e.upscale > 1.01 else ""
        parts.append(f"trained at {e.bucket[0]}×{e.bucket[1]} from a {cw}×{ch} crop{grown}")
    return "Used: " + ", ".join(parts) + "."


def _data_uri(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def _card(t: Thumb) -> str:
    e = t.entry
    state = "skipped" if not e.used else "warned" if e.warnings else "clean"
    img = _data_uri(t.path)
    picture = (
        f'<img src="{img}" alt="{html.escape(e.file)}">' if img else '<div class="none"></div>'
    )
    warnings = "".join(
        f'<div class="warning"><b>{html.escape(LABELS.get(w.code, w.code))}</b> '
        f'<span class="code">{html.escape(w.code)}</span><br>{html.escape(w.message)}</div>'
        for w in e.warnings
    )
    caption = f'<div class="caption">Caption: “{html.escape(e.caption)}”</div>' if e.caption else ""
    return (
        f'<div class="card {state}" data-file="{html.escape(e.file)}">{picture}'
        f'<div class="info"><div class="name">{html.escape(e.file)}</div>'
        f'<div class="status">{html.escape(status_line(e))}</div>{caption}'
        + warnings
        + "</div></div>"
    )


STYLE = """<style>
.cameo-photos{font-size:14px;line-height:1.4}
.cameo-photos .summary{margin:0 0 10px;padding:10px 12px;border-radius:8px;
 border:1px solid var(--border-color-primary,#ccc)}
.cameo-photos .summary p{margin:2px 0}
.cameo-photos .summary p.first{font-weight:700}
.cameo-photos .summary .note{color:#b45309;font-weight:600}
.cameo-photos .legend{display:flex;flex-wrap:wrap;gap:14px;margin:0 0 10px;font-size:13px}
.cameo-photos .legend span{display:inline-flex;align-items:center;gap:6px}
.cameo-photos .legend i{display:inline-block;width:22px;height:12px;box-sizing:border-box}
.cameo-photos .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));
 gap:10px}
.cameo-photos .card{display:flex;gap:12px;padding:8px;border-radius:8px;
 border:1px solid var(--border-color-primary,#ccc);border-left-width:6px}
.cameo-photos .card.clean{border-left-color:#16a34a}
.cameo-photos .card.warned{border-left-color:#f59e0b}
.cameo-photos .card.skipped{border-left-color:#dc2626}
.cameo-photos .card img{flex:none;max-width:256px;max-height:256px;align-self:flex-start;
 border-radius:4px}
.cameo-photos .card .none{flex:none;width:120px;height:90px;background:#666;border-radius:4px}
.cameo-photos .info{min-width:0}
.cameo-photos .name{font-weight:700;word-break:break-all}
.cameo-photos .status{margin:2px 0 4px}
.cameo-photos .caption{font-style:italic;opacity:.85;margin-bottom:4px}
.cameo-photos .warning{margin:4px 0;padding:4px 8px;border-radius:4px;
 background:rgba(245,158,11,.14)}
.cameo-photos .code{font-family:monospace;font-size:12px;opacity:.7}
</style>"""


def _legend() -> str:
    def swatch(colour, style: str) -> str:
        return f'<i style="border:{style} rgb{colour}"></i>'

    return (
        '<div class="legend">'
        f"<span>{swatch(SUBJECT_COLOUR, '4px solid')} the person's face</span>"
        f"<span>{swatch(FACE_COLOUR, '2px solid')} other faces found</span>"
        f"<span>{swatch(CROP_COLOUR, '2px dashed')} the crop that is trained</span>"
        "</div>"
    )


def report_html(report: PhotoReport, thumbs: Sequence[Thumb]) -> str:
    """The Photos tab's view of a photo check: summary, legend, one card per file."""
    t = report.target
    head = (
        f"Checked for {t.width}×{t.height} training ({t.frames}-frame clips at {t.fps:g} fps; "
        f"buckets {', '.join(str(b) for b in report.buckets)}; crops enlarged at most "
        f"{t.max_upscale:g}×)."
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    summary = "".join(
        f'<p class="{"first" if i == 0 else ""}">{html.escape(s)}</p>'
        for i, s in enumerate(report.summary())
    )
    cards = "".join(_card(th) for th in thumbs)
    return (
        f'{STYLE}<div class="cameo-photos"><div class="summary">{notes}{summary}'
        f'<p style="opacity:.75">{html.escape(head)}</p></div>{_legend()}'
        f'<div class="grid">{cards}</div></div>'
    )
