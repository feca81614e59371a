"""A user's photo folder -> checked, captioned, bucketed training items, with a report.

Accepted: photos (JPEG, PNG, WebP, HEIC/HEIF, BMP, TIFF; ``images``) and clips (MOV, MP4,
WebM, GIF, ...; cut into windows of the base's clip length, ``clips``), captioned by a
same-name ``.txt`` or by ``metadata.jsonl`` / ``metadata.csv`` rows (``captions``). Each goes
to the aspect-ratio bucket nearest its shape, cropped to keep the subject's face and to leave
other people out (``buckets``, ``subject``). Every file gets an entry in the photo report
(``report``): used, or skipped and why, with its faces, crop, bucket and warnings. Nothing
here raises on a bad file; only too few usable files is an error.

    report = scan_folder(folder, "mike", target=Target(480, 832, 81, 16))
    report.items          # [Item(path, caption, frames (F, H, W, 3) uint8, note)]
    report.photos         # PhotoReport: .format(), .to_json()
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import faces as facelib
from .buckets import (
    WORLD_SIDE,
    WORLD_TARGET,
    Framing,
    Target,
    frame_photo,
    render,
    target_for_base,
)
from .captions import caption_for, metadata_captions
from .clips import ClipInfo, clip_windows, iter_windows, probe_clip
from .images import (
    IMAGE_EXT,
    VIDEO_EXT,
    Decoded,
    UnreadableImage,
    decode_side,
    open_image,
    register_heif,
)
from .quality import NEAR_DUPLICATE_BITS, average_hash, exposure, look_words, sharpness
from .report import PhotoEntry, PhotoReport
from .subject import FoundFace, faces_available, find_faces, folder_reference, pick_subject
from .subject import union as union_box
from .verdicts import face_warnings, folder_warnings

IGNORED = ("metadata.jsonl", "metadata.csv", "truth.json")
FACES_NOTE = (
    "face-aware cropping needs the faces extra (pip install 'cameo-lora[faces]'): photos were "
    "centre-cropped and not checked for faces"
)


WORLD_NOTE = (
    "photos for the built-in world's model: centre-cropped; its cartoon faces are not checked "
    "by the face detector, which finds real faces"
)


class DatasetError(ValueError):
    """The folder cannot be trained on (too few usable photos, or not a folder)."""


@dataclass
class Item:
    path: Path
    caption: str
    frames: np.ndarray  # (F, H, W, 3) uint8: F = 1 for photos, 4k+1 for a clip window
    note: str = ""


@dataclass
class DatasetReport:
    folder: Path
    items: list[Item] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (file, status)
    warnings: list[str] = field(default_factory=list)
    photos: PhotoReport | None = None  # the photo check of the same scan

    @property
    def usable(self) -> int:
        """Files that gave training items (a clip's windows count once)."""
        return len({i.path for i in self.items})

    def format(self) -> str:
        photos = sum(1 for i in self.items if i.frames.shape[0] == 1)
        clips = len({i.path for i in self.items if i.frames.shape[0] > 1})
        windows = sum(1 for i in self.items if i.frames.shape[0] > 1)
        captioned = len({i.path for i in self.items if "template caption" not in i.note})
        in_windows = f" in {windows} windows" if windows > clips else ""
        head = (
            f"dataset {self.folder}: {self.usable} usable ({photos} photos, {clips} clips"
            f"{in_windows}), {captioned} with captions, {len(self.lines) - self.usable} skipped"
        )
        body = [f"  {name}: {status}" for name, status in self.lines]
        return "\n".join([head, *body, *(f"  warning: {w}" for w in self.warnings)])


@dataclass
class _Staged:
    """One media file after the first pass: decoded (photos) or probed (clips)."""

    path: Path
    entry: PhotoEntry
    decoded: Decoded | None = None
    found: list[FoundFace] = field(default_factory=list)  # in decoded pixels
    clip: ClipInfo | None = None
    windows: list[list[int]] = field(default_factory=list)


class _FolderScan:
    """One pass over a folder: stage every file, find the subject, frame and check each."""

    def __init__(
        self, folder: Path, trigger: str, target: Target, use_faces: bool, min_usable: int
    ):
        self.folder, self.trigger, self.target = folder, trigger, target
        self.use_faces = use_faces
        self.buckets = target.buckets()
        self.side = decode_side(target.height, target.width)
        self.report = DatasetReport(folder)
        self.check = PhotoReport(str(folder), target, self.buckets, min_usable, use_faces)
        self.report.photos = self.check
        self.status: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}
        self.reference: np.ndarray | None = None
        self.subjects: list[tuple[PhotoEntry, np.ndarray | None]] = []  # photos' subjects

    # ------------------------------------------------------------------ first pass

    def stage(self) -> list[_Staged]:
        staged, seen = [], {}
        for path in sorted(self.folder.iterdir()):
            ext = path.suffix.lower()
            if path.name.startswith(".") or path.is_dir() or ext == ".txt" or path.name in IGNORED:
                continue
            kind = "photo" if ext in IMAGE_EXT else "clip" if ext in VIDEO_EXT else "other"
            entry = PhotoEntry(path.name, kind)
            self.check.entries.append(entry)
            self.status[path.name] = ""
            if kind == "other":
                self.skip(entry, "not an image or clip")
                continue
            digest = _file_digest(path)
            if digest in seen:
                self.skip(entry, f"exact duplicate of {seen[digest]}")
                continue
            seen[digest] = path.name
            try:
                staged.append(self._open(path, entry))
            except UnreadableImage as e:
                self.skip(entry, str(e))
        return staged

    def _open(self, path: Path, entry: PhotoEntry) -> _Staged:
        s = _Staged(path, entry)
        if entry.kind == "photo":
            s.decoded = open_image(path, self.side)
            entry.size, entry.decoded = s.decoded.size, s.decoded.reduced_by
            self.notes[path.name] = list(s.decoded.notes)
            s.found = self.faces_in(np.asarray(s.decoded.image))
            return s
        t = self.target
        s.clip = probe_clip(path)
        s.windows = clip_windows(s.clip.frames, s.clip.fps, t.frames, t.fps)
        if not s.windows:
            raise UnreadableImage("not a readable clip (no frames)")
        n, k = len(s.windows), len(s.windows[0])
        rate = f" at {s.clip.fps:g} fps" if s.clip.fps else ""
        self.notes[path.name] = [
            f"{s.clip.frames} frames{rate} -> {n} window{'s' * (n > 1)} of {k} at {t.fps:g} fps"
        ]
        return s

    def faces_in(self, image: np.ndarray) -> list[FoundFace]:
        if not self.use_faces:
            return []
        try:
            return find_faces(image)
        except facelib.FacesUnavailable:
            self.use_faces = self.check.faces_checked = False
            self.check.notes.append(FACES_NOTE)
            return []

    def skip(self, entry: PhotoEntry, reason: str) -> None:
        entry.used, entry.reason = False, reason
        self.status[entry.file] = f"skipped: {reason}"

    # ----------------------------------------------------------------- second pass

    def frame(self, staged: list[_Staged], meta: dict[str, str]) -> None:
        photos = [s.found for s in staged if s.decoded is not None]
        self.reference = folder_reference(photos) if self.use_faces else None
        hashes: list[tuple[str, np.ndarray]] = []
        for s in staged:
            caption, own, cap_note = caption_for(s.path, meta, self.trigger)
            try:
                clips = self._photo(s) if s.decoded is not None else self._clip(s)
            except UnreadableImage as e:
                self.skip(s.entry, str(e))
                continue
            s.entry.used, s.entry.caption = True, caption
            self._caption_warnings(s.entry, own, cap_note)
            ahash = average_hash(clips[0][0])
            near = next(
                (n for n, h in hashes if int((h != ahash).sum()) <= NEAR_DUPLICATE_BITS), None
            )
            hashes.append((s.path.name, ahash))
            notes = [*self.notes.get(s.path.name, []), cap_note]
            if near:
                notes.append(f"near duplicate of {near}")
                s.entry.warn(
                    "near_duplicate",
                    f"near duplicate of {near}: it adds little; vary "
                    "pose, expression, place and light instead",
                )
            note = "; ".join(n for n in notes if n)
            self.status[s.path.name] = "used" + (f" ({note})" if note else "")
            s.entry.notes = [n for n in notes if n]
            self.report.items += [Item(s.path, caption, frames, note) for frames in clips]

    def _photo(self, s: _Staged) -> list[np.ndarray]:
        """The photo in its bucket: [(1, H, W, 3)]."""
        d, e = s.decoded, s.entry
        subject = pick_subject(s.found, self.reference)
        keep = s.found[subject].box if subject is not None else None
        avoid = [f.box for i, f in enumerate(s.found) if i != subject]
        framing = frame_photo(d.image.size, self.buckets, keep, avoid, self.target.max_upscale)
        if framing is None and keep is not None:  # the face fits no bucket: centre crop
            framing = frame_photo(d.image.size, self.buckets, max_upscale=self.target.max_upscale)
            self.notes[e.file].append("the face fits no bucket's crop: centre crop")
        if framing is None:
            raise UnreadableImage(self._too_small(e.size))
        self._measure(e, d, s.found, subject, framing)
        e.frames = 1
        if subject is not None:
            self.subjects.append((e, s.found[subject].descriptor))
        if framing.upscale > 1.01:
            self.notes[e.file].append(f"small ({e.size[0]}x{e.size[1]}), upscaled")
        return [render(d.image, framing)[None]]

    def _clip(self, s: _Staged) -> list[np.ndarray]:
        """Each window in its bucket: [(F, H, W, 3)], framed around the subject's face as found
        in its first, middle and last frames."""
        out = []
        for frames in iter_windows(s.path, s.windows, self.side):
            picks = sorted({0, len(frames) // 2, len(frames) - 1})
            found = {i: self.faces_in(np.asarray(frames[i])) for i in picks}
            subjects = {i: pick_subject(f, self.reference) for i, f in found.items()}
            keep = [found[i][j].box for i, j in subjects.items() if j is not None]
            avoid = [f.box for i, fs in found.items() for j, f in enumerate(fs) if j != subjects[i]]
            size = frames[0].size
            framing = frame_photo(
                size,
                self.buckets,
                union_box(keep) if keep else None,
                avoid,
                self.target.max_upscale,
            )
            if framing is None:
                raise UnreadableImage(self._too_small(size))
            out.append(np.stack([render(f, framing) for f in frames]))
            if len(out) == 1:  # the report shows the first window by its middle frame
                mid = picks[len(picks) // 2]
                cw, ch = s.clip.size  # as the file declares it; the frames may be turned
                full = (cw, ch) if (size[0] >= size[1]) == (cw >= ch) else (ch, cw)
                d = Decoded(frames[mid], full, size[0] / full[0])
                self._measure(s.entry, d, found[mid], subjects[mid], framing)
        s.entry.windows, s.entry.frames = len(out), out[0].shape[0]
        return out

    def _measure(
        self, e: PhotoEntry, d: Decoded, found: list[FoundFace], subject, framing: Framing
    ) -> None:
        """Fill ``e`` from one framed image (a photo, or a clip window's middle frame)."""
        e.size = d.size
        e.faces = [d.to_full(f.box) for f in found]
        e.face_scores = [f.score for f in found]
        e.subject = subject
        e.crop = d.to_full(framing.crop)
        e.bucket = (framing.bucket.width, framing.bucket.height)
        e.upscale = framing.bucket.width * d.scale / (framing.crop[2] - framing.crop[0])
        arr = np.asarray(d.image)  # (H, W, 3) decoded pixels
        box = found[subject].box if subject is not None else None
        e.sharpness = sharpness(arr, box)
        e.brightness, dark, bright = exposure(arr, box)
        matched = self.reference is not None and sum(f.descriptor is not None for f in found) > 1
        face_warnings(e, found, subject, framing, self.use_faces, (dark, bright), matched)

    def _too_small(self, size: tuple[int, int]) -> str:
        t = self.target
        return (
            f"too small for {t.width}x{t.height} training: {size[0]}x{size[1]} would be "
            f"enlarged more than {t.max_upscale:g}x in every bucket"
        )

    @staticmethod
    def _caption_warnings(e: PhotoEntry, own: str, cap_note: str) -> None:
        if not own:
            e.warn(
                "caption_missing",
                f"{cap_note.split(':')[0]}: 'a photo of [trigger]' is used; "
                "say what changes in this photo (pose, expression, clothes, place, light)",
            )
        words = look_words(own)
        if words:
            e.warn(
                "caption_look",
                f"the caption describes the person's look ({', '.join(words)}): captions "
                "should describe what changes; the trigger carries the look",
            )

    # --------------------------------------------------------------------- finish

    def finish(self) -> DatasetReport:
        folder_warnings(self.check, self.subjects)
        self.report.lines = [(name, status) for name, status in self.status.items()]
        return self.report


def photos_look_real(folder: Path) -> bool:
    """Whether ``folder`` holds a photo larger than the built-in world's renders (read from
    the file headers): the face detector finds real faces, not the world's cartoon ones."""
    register_heif()
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXT:
            continue
        try:
            with Image.open(path) as img:
                if min(img.size) >= WORLD_SIDE:
                    return True
        except (OSError, ValueError):
            continue  # unreadable: the scan says why
    return False


def scan_folder(
    folder: Path,
    trigger: str,
    *,
    height: int = 64,
    width: int = 64,
    min_usable: int = 4,
    target: Target | None = None,
    faces: bool | None = None,
) -> DatasetReport:
    """Read and check a training folder for a base trained at ``target`` (default: ``height``
    x ``width``, clips of 17 frames at 8 fps). ``faces``: crop around faces and check them
    (default: for a base of real people, ``target.real_faces``, when the faces extra is
    installed). Raises DatasetError if fewer than
    ``min_usable`` files can be used; the report says why each skipped file was skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    target = target or Target(height, width)
    real = target.real_faces if target.real_faces is not None else photos_look_real(folder)
    use_faces = (real and faces_available()) if faces is None else faces
    scan = _FolderScan(folder, trigger, target, use_faces, min_usable)
    if not use_faces:
        scan.check.notes.append(FACES_NOTE if real else WORLD_NOTE)
    staged = scan.stage()
    scan.frame(staged, metadata_captions(folder))
    report = scan.finish()
    media_stems = {Path(e.file).stem for e in scan.check.entries if e.kind != "other"}
    for txt in sorted(folder.glob("*.txt")):
        if txt.stem not in media_stems:
            report.warnings.append(f"{txt.name} has no image or clip beside it")
    if report.usable < min_usable:
        raise DatasetError(
            f"only {report.usable} usable photos or clips in {folder} (need at least {min_usable})\n"
            + report.format()
        )
    return report


def check_photos(
    folder: Path,
    *,
    base: str | Path | None = None,
    trigger: str = "",
    target: Target | None = None,
    min_photos: int = 4,
    faces: bool | None = None,
) -> PhotoReport:
    """The photo check of ``folder`` for ``base`` (its resolution, clip length and frame
    rate; ``target`` overrides): never raises on too few photos (see ``.enough``)."""
    target = target or target_for_base(base)
    report = scan_folder(Path(folder), trigger, target=target, min_usable=0, faces=faces)
    report.photos.min_photos = min_photos
    return report.photos


def read_image(path: Path, height: int, width: int) -> tuple[np.ndarray, str]:
    """One photo centre-cropped into the bucket nearest its shape for a ``height`` x ``width``
    base: (1, H, W, 3) uint8 and a note; raises ValueError with a readable reason."""
    target = Target(height, width)
    d = open_image(Path(path), decode_side(height, width))
    framing = frame_photo(d.image.size, target.buckets(), max_upscale=target.max_upscale)
    if framing is None:
        raise UnreadableImage(f"too small for {width}x{height} training")
    return render(d.image, framing)[None], "; ".join(d.notes)


def read_clip(
    path: Path, height: int, width: int, max_frames: int = WORLD_TARGET.frames
) -> tuple[np.ndarray, str]:
    """A clip's first window (``max_frames`` frames at 8 fps, or fewer: 4k+1) centre-cropped:
    (F, H, W, 3) uint8 and a note; raises ValueError with a readable reason."""
    target = Target(height, width, max_frames)
    info = probe_clip(Path(path))
    windows = clip_windows(info.frames, info.fps, target.frames, target.fps)[:1]
    for frames in iter_windows(Path(path), windows, decode_side(height, width)):
        framing = frame_photo(frames[0].size, target.buckets(), max_upscale=target.max_upscale)
        if framing is None:
            raise UnreadableImage(f"too small for {width}x{height} training")
        return np.stack(
            [render(f, framing) for f in frames]
        ), f"{info.frames} frames -> {len(frames)}"
    raise UnreadableImage("not a readable clip (no frames)")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
