"""Writes the study's results (``recipes/study.py``): results.json, results.md and PNG plots."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_f(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return out


def paired_change(clips: list[float], base: list[float]) -> str:
    """Mean change of per-clip values against the base model's on the same clips (same prompts
    and seeds), with its standard error: 'mean +- se'."""
    d = np.asarray(clips, dtype=float) - np.asarray(base, dtype=float)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} ± {se:.3f}"


def _plot(path: Path, draw) -> str:
    fig = Figure(figsize=(5, 3.2), dpi=110)  # no pyplot: no GUI backend, nothing global
    draw(fig.subplots())
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _rank_plot(ax, rows):
    ranks = [r["rank"] for r in rows]
    ax.plot(ranks, [r["identity"] for r in rows], "o-", label="identity (norm.)")
    ax.plot(ranks, [r["fidelity"] for r in rows], "s-", label="prompt fidelity")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank")
    ax.legend()


def _scale_plot(ax, rows):
    ax.plot([r["fidelity"] for r in rows], [r["identity"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"{r['scale']:g}", (r["fidelity"], r["identity"]), fontsize=8)
    ax.set_xlabel("prompt fidelity")
    ax.set_ylabel("identity (normalised)")


def _compose_plot(ax, rows, triggers):
    x = np.arange(len(rows))
    for i, t in enumerate(triggers):
        ax.bar(x + 0.4 * i - 0.2, [r[f"{t}_identity"] or 0 for r in rows], 0.4, label=t)
    ax.set_xticks(x, [r["method"] for r in rows], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("identity (normalised)")
    ax.legend()


def write_report(results: dict, out: Path) -> Path:
    """Write results.json and results.md (with plots) into ``out``; returns results.md."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = results["config"]
    results = {
        **results,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Results: what LoRA trades, measured",
        "",
        # a merged page: the config below is only the last invocation's, so say so
        (
            "This page merges runs (each table's is listed below); the last to write it: "
            if results.get("runs") and len(results["runs"]) > 1
            else ""
        )
        + f"`python recipes/study.py --parts {cfg['parts']} --steps {cfg['steps']} --scenes {cfg['scenes']} --seeds {cfg['seeds']}`"
        f" ({results['date']}, {results['machine']}). Raw numbers: `results.json`.",
        f"People: held-out world people {cfg['people']} (triggers {cfg['triggers']}), 20 photos each;"
        f" every LoRA trained with `cameo train` defaults for {cfg['steps']} steps. Identity is normalised by"
        " the real photos' self-similarity (1.0 = as alike as two real photos); identification is"
        " top-1 among the person and 99 distractors. Step s and training MiB come from a fresh process"
        " per setting (median of 5 steps at `cameo train`'s default batch, after 2 warm-up steps; RSS"
        " high-water mark over the loaded transformer during those steps). Train s is the wall time of"
        " the whole `cameo train` run (loading, caching, training, saving).",
        "",
    ]
    runs = results.get("runs", {})
    if runs:
        lines += ["Each table's run (people, steps, scenes x seeds, date):", ""]
        lines += [
            f"- {part}: people {r['people']}, {r['steps']} steps, {r['scenes']} x {r['seeds']}, {r['date']}"
            for part, r in runs.items()
        ]
        lines.append("")
    if "rank" in results:
        rows = results["rank"]
        lines += ["## Rank sweep", ""]
        lines += _table(rows, [("rank", "rank"), ("params", "trainable params"), ("file_kib", "file KiB"),
                               ("step_s", "step s"), ("train_mib", "training MiB"), ("train_s", "train s"), ("identity", "identity"), ("identification", "identified"),
                               ("fidelity", "prompt fidelity")])  # fmt: skip
        lines += [
            "",
            f"![rank]({_plot(out / 'results-rank.png', lambda ax: _rank_plot(ax, rows))})",
            "",
        ]
    if "scale" in results:
        rows = results["scale"]
        lines += ["## Scale sweep", "", f"The rank-{cfg['rank']} LoRA at scale s.", ""]
        lines += _table(
            rows,
            [
                ("scale", "scale"),
                ("identity", "identity"),
                ("identification", "identified"),
                ("fidelity", "prompt fidelity"),
            ],
        )
        lines += [
            "",
            f"![scale]({_plot(out / 'results-scale.png', lambda ax: _scale_plot(ax, rows))})",
            "",
        ]
    if "full" in results:
        rows = results["full"]
        famous = results.get("runs", {}).get("full", {}).get("famous", cfg["famous"])
        lines += ["## LoRA against full fine-tuning", "",
                  "Same photos, loss, batches and steps. Forgetting: prompt fidelity on prompts that do not name the person,"
                  f" and, for {famous} famous people generated from their names, top-1 identification among themselves and the mean similarity to their own renders.", ""]  # fmt: skip
        base = rows[0].get("famous_similarity_clips")
        rows = [r | ({"famous_change": paired_change(r["famous_similarity_clips"], base)}
                     if base and r.get("famous_similarity_clips") and r is not rows[0] else {}) for r in rows]  # fmt: skip
        lines += _table(rows, [("model", "model"), ("trained_params", "trained params"), ("step_s", "step s"),
                               ("train_mib", "training MiB"), ("train_s", "train s"), ("identity", "identity"),
                               ("identification", "identified"), ("unrelated_fidelity", "fidelity, unrelated prompts"),
                               ("famous_top1", "famous top-1"), ("famous_similarity", "famous similarity"),
                               ("famous_change", "famous similarity vs base (± s.e.)")])  # fmt: skip
        lines.append("")
    if "compose" in results:
        comp = results["compose"]
        triggers = list(comp["single_identification"])
        paired = (
            " (from the noise of their half of each pair clip)" if comp.get("singles_noise") else ""
        )
        identity = comp.get("single_identity", {})
        lines += ["## Two people in one clip", "",
                  f"Single-LoRA identification (each alone in a 64-wide clip, with the words and wall of their half of the pair clips{paired}): "
                  + ", ".join(f"{t} {_f(v)}" + (f" (identity {_f(identity[t])})" if t in identity else "")
                              for t, v in comp["single_identification"].items()) + ".",
                  "Predicted interference is `cameo inspect`'s score from the two files' subspace overlap.", ""]  # fmt: skip
        cols = [("method", "method"), ("predicted_interference", "predicted interference")]
        for t in triggers:
            cols += [(f"{t}_identity", f"{t} identity"), (f"{t}_identification", f"{t} identified")]
        cols.append(("kept_vs_single", "worst kept / single"))
        lines += _table(comp["rows"], cols)
        lines += [
            "",
            f"![compose]({_plot(out / 'results-compose.png', lambda ax: _compose_plot(ax, comp['rows'], triggers))})",
            "",
        ]
    if "notes" in results:
        lines += ["## Reading these numbers", "", results["notes"], ""]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path
