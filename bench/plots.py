"""PNG plots of the benchmarks (matplotlib, the `test` extra): a latency distribution and
throughput over time, side by side. Written to docs/img/ by default."""

from __future__ import annotations

import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def latency_and_throughput(path: Path, title: str, latencies: dict[str, list[float]],
                           events: dict[str, list[float]], *, unit: str = "ms", bin_seconds: float = 1.0) -> Path:
    """latencies: name -> durations in seconds (histogram, log x, p50/p95 marked);
    events: name -> times in seconds since the start (rate per second over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 1000.0 if unit == "ms" else 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, values in latencies.items():
        every = [v * scale for v in values]
        values = [v for v in every if v > 0]  # a log axis cannot show 0: counted in the legend
        if not values:
            continue
        low, high = min(values), max(values)
        bins = [low * (high / low) ** (i / 40) for i in range(41)] if high > low else 10
        p50, p95 = _percentile(every, 0.5), _percentile(every, 0.95)
        zeros = f", {len(every) - len(values)} at 0 not drawn" if len(every) > len(values) else ""
        line = left.hist(values, bins=bins, alpha=0.55, label=f"{name} (n={len(every)}{zeros}; p50 {p50:.3g}, "
                                                              f"p95 {p95:.3g} {unit})")[2][0]
        for q in (q for q in (p50, p95) if q > 0):
            left.axvline(q, color=line.get_facecolor(), linestyle="--", linewidth=1)
    if latencies:
        left.set_xscale("log")
    left.set_xlabel(f"latency ({unit}, log scale)")
    left.set_ylabel("count")
    left.set_title("latency distribution (dashed: p50, p95)", fontsize=10)
    left.legend(fontsize=7)
    end = max((max(ts) for ts in events.values() if ts), default=0.0)
    n_bins = max(1, math.ceil(end / bin_seconds))
    for name, times in events.items():
        counts = [0] * n_bins
        for t in times:
            counts[min(n_bins - 1, int(t / bin_seconds))] += 1
        right.plot([(i + 0.5) * bin_seconds for i in range(n_bins)], [c / bin_seconds for c in counts],
                   label=f"{name} (total {len(times)})", linewidth=1.2)
    right.set_xlabel("seconds since start")
    right.set_ylabel("per second")
    right.set_title(f"throughput over time ({bin_seconds:g} s bins)", fontsize=10)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save(fig, path, title, 11)


def save(fig, path: Path, title: str, fontsize: float) -> Path:
    """Title, lay out, write the PNG (its folder made), close: every benchmark plot."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
