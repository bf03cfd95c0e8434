"""Draw the Grafana dashboard's panels (charts/schedgen/dashboards/schedgen.json) from a
real Prometheus: each panel's own queries over a time range, one subplot per panel with
the panel's title, in the dashboard's grid order. Used by the Prometheus e2e test
(docs/img/dashboard.png) and by hand against any Prometheus:

    python hack/dashboard_png.py --prometheus http://127.0.0.1:9090 --minutes 30 --out /tmp/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "schedgen" / "dashboards" / "schedgen.json"


def panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def concrete(expr: str, rate_interval: str) -> str:
    """A panel query as Prometheus can run it: Grafana's $__rate_interval made concrete."""
    return expr.replace("$__rate_interval", rate_interval)


def legend(fmt: str, labels: dict) -> str:
    out = fmt
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def fetch(query_range, start: float, end: float, step: float, rate_interval: str) -> list[dict]:
    """[{title, unit, series: [(legend, [(t, value)])]}] for every panel; query_range(expr,
    start, end, step) returns Prometheus' matrix result."""
    out = []
    for panel in panels():
        series = []
        for target in panel["targets"]:
            for s in query_range(concrete(target["expr"], rate_interval), start, end, step):
                points = [(float(t), float(v)) for t, v in s["values"]]
                series.append((legend(target.get("legendFormat", ""), s["metric"]), points))
        out.append({"title": panel["title"], "unit": panel["fieldConfig"]["defaults"].get("unit", ""),
                    "series": series})
    return out


def draw(data: list[dict], path: Path, start: float, title: str = "schedgen dashboard") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(data) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.9 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, data):
        for name, points in panel["series"]:
            xs = [t - start for t, v in points if not math.isnan(v)]
            ys = [v for t, v in points if not math.isnan(v)]
            if xs:
                ax.plot(xs, ys, label=name or "value", linewidth=1.4)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel({"s": "seconds", "ops": "per second", "reqps": "per second"}.get(panel["unit"], ""),
                      fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(data):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the test started", fontsize=8)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import urllib.parse
    import urllib.request

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = ap.parse_args(argv)

    def query_range(expr, start, end, step):
        q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{args.prometheus}/api/v1/query_range?{q}", timeout=30) as answer:
            return json.load(answer)["data"]["result"]

    end = time.time()
    start = end - args.minutes * 60
    step = max(1.0, args.minutes * 60 / 300)
    print(draw(fetch(query_range, start, end, step, args.rate_interval), args.out, start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
