"""The web app's files: one folder per browser session, safe names, safe zip extraction.

Everything a user sends ends up flat in its session's ``photos/`` folder under a name made of
safe characters only, so no upload (a crafted file name, a zip entry with ``..`` or an absolute
path, a symlink) can write outside the app's work folder. Nothing here imports Gradio.
"""

from __future__ import annotations

import re
import secrets
import shutil
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..data import IMAGE_EXT, VIDEO_EXT

CAPTION_EXT = {".txt"}
METADATA_NAMES = {"metadata.jsonl", "metadata.csv"}
ACCEPTED_EXT = IMAGE_EXT | VIDEO_EXT | CAPTION_EXT
MAX_NAME = 100  # characters of a stored file name, suffix included
MAX_FILES = 500  # files one session's photo folder may hold (uploads and zip entries alike)
MAX_FILE_BYTES = 50 * 2**20  # one photo, clip or caption
MAX_ZIP_BYTES = 500 * 2**20  # everything a zip holds, uncompressed
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


class UploadError(ValueError):
    """An upload the app refuses (unsafe zip, too big, too many files); the message is for
    the user and shown in the page."""


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder: the last path component only (``/`` and
    ``\\`` both count), letters, digits, ``.``, ``-`` and ``_``, no leading dot, at most
    ``MAX_NAME`` characters with the suffix kept."""
    base = re.split(r"[/\\]", name)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    suffix = suffix[:16]  # .safetensors is 11
    stem = stem.strip("._") or "file"
    stem = stem[: MAX_NAME - len(suffix) - 1]
    return f"{stem}.{suffix}" if suffix else stem


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves to somewhere within ``folder`` (symlinks followed)."""
    return path.resolve().is_relative_to(folder.resolve())


@dataclass
class Session:
    """One browser session's folder: its photos, training run, clips and downloads."""

    id: str
    root: Path

    @property
    def photos(self) -> Path:
        return self.root / "photos"

    @property
    def run(self) -> Path:
        return self.root / "lora"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def thumbs(self) -> Path:
        """The photo check's thumbnails (beside ``photos/``, so they are not photos)."""
        return self.root / "thumbs"

    @property
    def uploads(self) -> Path:
        """Second-person LoRAs the user brought for composition."""
        return self.root / "uploads"

    def lora_file(self, name: str) -> Path:
        return self.run / f"{name}.safetensors"

    def clear_photos(self) -> None:
        """Remove the photos and their thumbnails."""
        shutil.rmtree(self.photos, ignore_errors=True)
        shutil.rmtree(self.thumbs, ignore_errors=True)
        self.photos.mkdir(parents=True)


def new_session(workdir: Path) -> Session:
    """A fresh session folder with an unguessable name (128 random bits)."""
    sid = secrets.token_hex(16)
    session = Session(sid, Path(workdir).resolve() / "sessions" / sid)
    for folder in (session.photos, session.run, session.clips, session.exports, session.uploads):
        folder.mkdir(parents=True, exist_ok=True)
    return session


def open_session(workdir: Path, sid: str) -> Session:
    """An existing session by id; refuses anything that is not one of ours."""
    if not isinstance(sid, str) or not SESSION_ID.match(sid):
        raise UploadError("this page's session is not valid; reload the page")
    session = Session(sid, Path(workdir).resolve() / "sessions" / sid)
    if not session.root.is_dir():
        raise UploadError("this page's session has expired; reload the page")
    return session


# --------------------------------------------------------------------------- uploads


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-1``, ``name-2``... when taken (a second upload of the same
    name keeps both files)."""
    dest = folder / name
    stem, suffix = dest.stem, dest.suffix
    k = 1
    while dest.exists():
        dest = folder / f"{stem}-{k}{suffix}"
        k += 1
    return dest


def _accepted(name: str) -> bool:
    return Path(name).suffix.lower() in ACCEPTED_EXT or name.lower() in METADATA_NAMES


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file())


def store_upload(src: Path, photos: Path, original_name: str | None = None) -> list[str]:
    """Copy one uploaded file (or the contents of a zip) into ``photos``; returns notes for
    the page, one per file: stored under which name, or ignored and why."""
    name = original_name or src.name
    if name.lower().endswith(".zip"):
        return extract_zip(src, photos)
    if not _accepted(name):
        return [f"{safe_name(name)}: ignored (not a photo, clip, caption or zip)"]
    size = src.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UploadError(f"{safe_name(name)} is {size / 2**20:.0f} MB; the limit is 50 MB a file")
    if _count_files(photos) >= MAX_FILES:
        raise UploadError(f"a session holds at most {MAX_FILES} files")
    dest = _free_name(photos, safe_name(name))
    if not inside(dest, photos):  # cannot happen with safe_name; checked anyway
        raise UploadError(f"refused file name {name!r}")
    shutil.copyfile(src, dest)
    return [f"{name} -> {dest.name}" if dest.name != name else f"{name}: stored"]


def _check_zip_entry(info: zipfile.ZipInfo) -> None:
    """Refuse entries that could write outside the folder however they were extracted."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UploadError(f"the zip is refused: entry {name!r} points outside its folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"the zip is refused: entry {name!r} is a symbolic link")


def _zip_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's photo, clip and caption files, after checking every entry and the totals."""
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise UploadError(f"the zip holds {len(infos)} entries; the limit is {MAX_FILES}")
    for info in infos:
        _check_zip_entry(info)
    members = [
        i
        for i in infos
        if not i.is_dir()
        and "__MACOSX" not in i.filename
        and not Path(i.filename).name.startswith(".")
    ]
    if sum(i.file_size for i in members) > MAX_ZIP_BYTES:
        raise UploadError("the zip unpacks to more than 500 MB")
    return members


def _copy_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Extract one entry, counting the bytes really written (a forged header cannot lie
    about the size)."""
    written = 0
    with zf.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > MAX_FILE_BYTES:
                out.close()
                dest.unlink()
                raise UploadError(f"{info.filename} in the zip is over 50 MB")
            out.write(chunk)


def extract_zip(src: Path, photos: Path) -> list[str]:
    """The photos, clips and captions of a zip, flattened into ``photos`` under safe names.
    The whole zip is refused if any entry is unsafe (absolute, ``..``, a link) or it is too big."""
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadError(f"{safe_name(src.name)} is not a readable zip file ({e})") from e
    notes = []
    with zf:
        members = _zip_members(zf)
        if _count_files(photos) + len(members) > MAX_FILES:
            raise UploadError(f"a session holds at most {MAX_FILES} files")
        for info in members:
            name = Path(info.filename.replace("\\", "/")).name
            if not _accepted(name):
                notes.append(f"{name}: ignored (not a photo, clip or caption)")
                continue
            dest = _free_name(photos, safe_name(name))
            if not inside(dest, photos):
                raise UploadError(f"the zip is refused: entry {info.filename!r}")
            _copy_limited(zf, info, dest)
            notes.append(f"{info.filename} -> {dest.name}")
    if not any("->" in n for n in notes):
        raise UploadError("the zip holds no photos, clips or captions")
    return notes


# ------------------------------------------------------------------------------ captions


def caption_rows(photos: Path) -> list[list[str]]:
    """[file, caption] for each photo or clip, the caption as its ``.txt`` holds it."""
    rows = []
    for path in sorted(photos.iterdir()) if photos.is_dir() else []:
        if path.suffix.lower() in IMAGE_EXT | VIDEO_EXT:
            txt = path.with_suffix(".txt")
            caption = txt.read_text(errors="replace").strip() if txt.is_file() else ""
            rows.append([path.name, caption])
    return rows


def write_captions(photos: Path, rows: list[list[str]]) -> int:
    """Write each row's caption to its photo's ``.txt``; rows naming no photo of this
    folder are ignored. Returns the number of captions written."""
    written = 0
    for row in rows:
        if len(row) < 2 or not row[0]:
            continue
        name, caption = str(row[0]), " ".join(str(row[1] or "").split())
        path = photos / safe_name(name)
        if path.name != name or not path.is_file() or not inside(path, photos):
            continue
        path.with_suffix(".txt").write_text(caption + "\n")
        written += 1
    return written
