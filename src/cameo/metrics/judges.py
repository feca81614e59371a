"""Which judge measures identity: cameo's world eyes or the real-face descriptor.

``--identity auto`` picks by what is being measured:

- with a base model (``cameo eval --lora``, training): the world eyes for the built-in
  cameo-tiny, the face judge for any other base;
- for a folder of clips judged against ``--photos`` (no base): the face judge when the photos
  are real photos of a face (shorter side over 128 px, where cameo-tiny renders 64 px, and a
  face found in at least half of them), the world eyes otherwise -- and without ``--photos``;
- a custom world encoder (``--encoder``) means the world eyes.
"""

from __future__ import annotations

from pathlib import Path

from ..models import ASSETS, TINY_DIR, TINY_I2V
from .face_identity import FaceJudge, photos_look_real
from .world_identity import Eyes, WorldJudge, load_references

IDENTITY_JUDGES = ("world", "face", "auto")
IDENTITY_HELP = (
    "who judges identity: world = cameo's eyes (cameo-tiny's cartoon world), face = dlib's "
    "face descriptor on real faces (the faces extra), auto = world for cameo-tiny and face for "
    "any other base; for --clips without --base, face when the --photos are real photos of a "
    "face (over 128 px with a face found in at least half), world otherwise"
)

Judge = WorldJudge | FaceJudge


def is_tiny_base(base: str | Path | None) -> bool:
    """Whether ``base`` names a built-in model of the world (None, "", "cameo-tiny",
    "cameo-tiny-i2v" or their folders), whose people cameo's eyes know."""
    if base in (None, "", "cameo-tiny", TINY_I2V):
        return True
    try:
        return Path(base).resolve() in (TINY_DIR.resolve(), (ASSETS / TINY_I2V).resolve())
    except OSError:
        return False


def resolve_identity(
    identity: str,
    *,
    base: str | Path | None = None,
    photos: Path | None = None,
    encoder: bool = False,
    clips: bool = False,
) -> str:
    """``world`` or ``face`` for an ``identity`` setting, by the module docstring's rules.

    ``clips``: a folder of clips is judged (the base, unless given, plays no part).
    """
    if identity not in IDENTITY_JUDGES:
        raise ValueError(f"identity must be one of {', '.join(IDENTITY_JUDGES)}, not {identity!r}")
    if identity != "auto":
        return identity
    if encoder:
        return "world"
    if clips and base is None:
        return "face" if photos is not None and photos_look_real(photos) else "world"
    return "world" if is_tiny_base(base) else "face"


def make_judge(name: str, photos: Path | None, eyes: Eyes | None = None) -> Judge:
    """The judge ``name`` (``world`` or ``face``) against the photos in the folder ``photos``.

    ``eyes`` are the world eyes to use (loaded when not given). The face judge raises
    :class:`~cameo.faces.FacesUnavailable` without the faces extra, and ValueError when no
    reference photo shows a face.
    """
    if name == "face":
        return FaceJudge.from_folder(photos)
    if name != "world":
        raise ValueError(f"no judge {name!r}")
    return WorldJudge(eyes or Eyes(), load_references(photos) if photos is not None else None)
