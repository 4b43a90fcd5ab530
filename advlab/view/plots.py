"""Plots drawn on private Agg figures (no pyplot state): L2 vs queries from the attack traces, the
fooling ratio of a universal perturbation per pass, and the transfer heat map of universal perturbations."""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from advlab.view.images import data_uri

GRID_POINTS = 256


def _as_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor or array as a float64 numpy array on the CPU."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def step_median(queries: np.ndarray, l2: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Median over images of each image's best-so-far L2 at each query budget in `grid`.

    `queries`, `l2`: (T, N). An image's value at budget q is its L2 at its last record with
    queries <= q (inf before its first adversarial); the median is inf while most have none.
    """
    n = queries.shape[1]
    at_budget = np.full((grid.size, n), np.inf)
    for i in range(n):
        q = np.maximum.accumulate(np.nan_to_num(queries[:, i], nan=0.0))
        idx = np.searchsorted(q, grid, side="right") - 1
        ok = idx >= 0
        at_budget[ok, i] = l2[idx[ok], i]
    at_budget = np.where(np.isnan(at_budget), np.inf, at_budget)
    return np.median(at_budget, axis=1)


def l2_vs_queries_png(
    trace_queries: torch.Tensor | np.ndarray, trace_l2: torch.Tensor | np.ndarray, title: str = ""
) -> bytes | None:
    """PNG of L2 (log y) against model queries per image; None when nothing finite to draw."""
    queries, l2 = _as_numpy(trace_queries), _as_numpy(trace_l2)
    if queries.ndim == 1:
        queries = np.repeat(queries[:, None], l2.shape[1] if l2.ndim == 2 else 1, axis=1)
    if l2.ndim != 2 or queries.shape != l2.shape or l2.size == 0:
        return None
    l2 = np.where(l2 > 0, l2, np.nan)  # log scale: non-positive and missing values are not drawn
    l2 = np.where(np.isfinite(l2), l2, np.nan)
    if not np.isfinite(l2).any():
        return None

    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i in range(l2.shape[1]):
        ax.plot(queries[:, i], l2[:, i], color="#4c72b0", alpha=0.3, linewidth=0.8)
    q_max = float(np.nanmax(queries)) if np.isfinite(queries).any() else 0.0
    grid = np.linspace(0.0, q_max, GRID_POINTS)
    med = step_median(queries, np.where(np.isnan(l2), np.inf, l2), grid)
    finite = np.isfinite(med)
    if finite.any():
        ax.plot(grid[finite], med[finite], color="#c44e52", linewidth=2.4, label="median over images")
        ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("model queries per image")
    ax.set_ylabel("L2 distance (pixels in [0, 1])")
    if title:
        ax.set_title(title.replace("$", r"\$"), fontsize=10)  # no mathtext
    ax.grid(True, which="both", alpha=0.25, linewidth=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_png(fig)


def l2_vs_queries_uri(
    trace_queries: torch.Tensor | np.ndarray, trace_l2: torch.Tensor | np.ndarray, title: str = ""
) -> str | None:
    """The L2-vs-queries plot as a data URI, or None when there is nothing to draw."""
    png = l2_vs_queries_png(trace_queries, trace_l2, title)
    return data_uri(png) if png is not None else None


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def active_share_uri(trace: torch.Tensor, title: str = "") -> str | None:
    """DAG: the share of each image's target pixels still active against iterations ((T, N) trace,
    thin lines per image, bold median); None for an empty trace."""
    y = _as_numpy(trace)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] == 0:
        return None
    fig = Figure(figsize=(5.6, 3.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(y.shape[0])
    ax.plot(steps, 100.0 * y, color="#4c72b0", alpha=0.3, linewidth=0.8)
    ax.plot(steps, 100.0 * np.median(y, axis=1), color="#c44e52", linewidth=2.2, label="median over images")
    ax.set_xlabel("iteration")
    ax.set_ylabel("target pixels still active (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title.replace("$", r"\$"), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(True, alpha=0.25, linewidth=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return data_uri(figure_png(fig))


def fooling_trace_png(trace: list[float] | np.ndarray, title: str = "") -> bytes | None:
    """PNG of the training fooling ratio (%) after each pass of a universal perturbation
    (entry 0: before the first pass); None with fewer than two finite values."""
    try:
        y = _as_numpy(trace).ravel()
    except (TypeError, ValueError):
        return None
    if y.size < 2 or np.isfinite(y).sum() < 2:
        return None
    y = np.where(np.isfinite(y), y, np.nan)
    fig = Figure(figsize=(4.8, 2.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(y.size), 100.0 * y, color="#4c72b0", marker="o", markersize=3.5, linewidth=1.6)
    ax.set_xlabel("pass over the training images")
    ax.set_ylabel("fooling ratio (%)")
    ax.set_ylim(0, 100)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        ax.set_title(title.replace("$", r"\$"), fontsize=10)
    ax.grid(True, alpha=0.25, linewidth=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_png(fig)


def transfer_heatmap_png(matrix: np.ndarray, row_labels: list[str], col_labels: list[str],
                         diagonal: np.ndarray | None = None) -> bytes | None:
    """PNG heat map of fooling ratios (rows: perturbations, columns: evaluated models), numbers
    annotated in %, bold where `diagonal` (same model) is True; NaN cells are gray with '—'.
    None when the matrix is empty or its shape does not match the labels."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or m.shape != (len(row_labels), len(col_labels)):
        return None
    diag = np.zeros(m.shape, dtype=bool) if diagonal is None else np.asarray(diagonal, dtype=bool)

    cmap = colormaps["viridis"].with_extremes(bad="#d9dee3")
    rows, cols = m.shape
    label_width = 0.075 * max(len(label) for label in row_labels)  # inches for the row labels
    fig = Figure(figsize=(2.2 + 1.3 * cols + label_width, 1.6 + 0.55 * rows), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            v = m[i, j]
            text, color = ("—", "#5f6b77") if not np.isfinite(v) else (f"{100 * v:.0f}%", "k" if v > 0.6 else "w")
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9,
                    fontweight="bold" if diag[i, j] else "normal")
    tilt = cols > 3 or cols * max(len(label) for label in col_labels) > 40  # long names would collide
    ax.set_xticks(range(cols), [s.replace("$", r"\$") for s in col_labels], rotation=30 if tilt else 0,
                  ha="right" if tilt else "center", fontsize=9)
    ax.set_yticks(range(rows), [s.replace("$", r"\$") for s in row_labels], fontsize=9)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("perturbation computed on")
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cbar.set_label("fooling ratio", fontsize=9)
    cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    fig.tight_layout()
    return figure_png(fig)
