"""``cameo ui``: a local web app over the library (photos, train, generate, results).

The pieces that need no Gradio (``workspace``: session folders, safe uploads; ``jobs``: the
background queue; ``tasks``: the library calls and progress reading) import without it;
``app`` builds the page.
"""

from __future__ import annotations

import os
from pathlib import Path

# Set before any submodule imports Gradio, which reads them at import time: no analytics (and
# so no version check over the network), no run history kept in the browser.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_RUN_HISTORY", "False")


def launch(
    workdir: str | Path = "cameo-ui-work",
    host: str = "127.0.0.1",
    port: int = 7860,
    base: str = "cameo-tiny",
    device: str = "auto",
    dtype: str = "auto",
) -> None:
    """Serve the app until interrupted (what ``cameo ui`` runs); ``device`` and ``dtype``:
    where its clips are rendered (``GenerateConfig``)."""
    from .page import serve

    serve(workdir, host=host, port=port, base=base, block=True, device=device, dtype=dtype)
