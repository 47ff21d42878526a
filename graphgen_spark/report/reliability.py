"""Reliability diagram (method.md §5.5): per-bin accuracy over mean confidence.

Written as a PNG next to the run's other outputs (``DIR/report/``), one per trainee model,
scope ``all``: bars of accuracy per confidence bin, the diagonal of perfect calibration,
the gap shaded, and the bin counts under the bars. The HTML report draws the same figure
inline (:func:`reliability_figure`).
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure


def reliability_figure(row: dict) -> Figure:
    """The diagram of one ``calibration`` row (a Figure of its own: no pyplot state)."""
    bins = row["bins"]
    width = bins[0]["hi"] - bins[0]["lo"]
    fig = Figure(figsize=(5.5, 5.5), dpi=110)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for b in bins:
        if not b["count"]:
            continue
        center = b["lo"] + width / 2
        ax.bar(center, b["acc"], width=width * 0.9, color="#4C72B0", edgecolor="black", lw=0.5)
        lo, hi = sorted((b["acc"], b["conf"]))
        ax.bar(
            center, hi - lo, bottom=lo, width=width * 0.9, color="#DD8452", alpha=0.45, hatch="//"
        )
        ax.text(center, -0.06, str(b["count"]), ha="center", va="top", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlabel("confidence (bins; counts below)")
    ax.set_ylabel("accuracy")
    ece = row["ece"] if row["ece"] is not None else float("nan")
    ax.set_title(f"{row['trainee_model']}: ECE {ece:.3f}, n = {row['n']}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_png(row: dict, out_dir: str | Path) -> Path:
    """Draw the diagram for one ``calibration`` row; returns the file path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", row["trainee_model"])
    path = out / f"reliability_{safe}.png"
    reliability_figure(row).savefig(path)
    return path
