"""Parser benchmark: ours against a naive baseline, side by side in one run.

The baseline does what the public ScheduleGenerator pdf-worker does: open the PDF
twice (once to read the first page's text, once for tables) and call pdfplumber's
`extract_tables()` with default settings on every page. Prints the median ms per page
(CPU time) of each over the fixture PDFs and a generated 100-page lecture PDF, and the peak RSS of
a fresh process parsing the 100-page PDF.

    .venv/bin/python bench/parse_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pdfplumber

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hack"))
import schedule_pdfs  # noqa: E402

from schedgen.runner.parsing import parse_pdf  # noqa: E402


def baseline(path: Path) -> int:
    with pdfplumber.open(path) as pdf:
        pdf.pages[0].extract_text()
    with pdfplumber.open(path) as pdf:
        tables = [pdf_page.extract_tables() for pdf_page in pdf.pages]
        return len(pdf.pages) + 0 * len(tables)


def ours(path: Path) -> int:
    return parse_pdf(path).pages


def ms_per_page(path: Path, repeat: int) -> tuple[float, float]:
    """Median CPU ms per page of (baseline, ours), runs interleaved so both see the same
    machine; CPU time rather than wall time, so a busy second core disturbs less."""
    samples: dict = {baseline: [], ours: []}
    for _ in range(repeat):
        for fn in (baseline, ours):
            started = time.process_time()
            pages = fn(path)
            samples[fn].append((time.process_time() - started) * 1000 / pages)
    return statistics.median(samples[baseline]), statistics.median(samples[ours])


# VmHWM is the peak RSS of this process image; ru_maxrss would carry over the
# parent's peak across exec on Linux.
PEAK_RSS = """
import re, sys
sys.path.insert(0, {hack!r})
from schedgen.runner.parsing import parse_pdf
{call}
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024)
"""


def peak_rss_mib(call: str) -> float:
    code = PEAK_RSS.format(hack=str(Path(schedule_pdfs.__file__).parent), call=call)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "lectures-100.pdf"
        print("generating a 100-page lecture PDF ...", file=sys.stderr, flush=True)
        schedule_pdfs.lecture_pdf(big, pages=100)
        inputs = sorted(p for p in schedule_pdfs.FIXTURES.glob("up/*.pdf")) + [big]
        rows = []
        for path in inputs:
            repeat = max(1, args.repeat // 2) if path == big else args.repeat * 4
            print(f"timing {path.name} ...", file=sys.stderr, flush=True)
            b, o = ms_per_page(path, repeat)
            rows.append({"file": path.name, "baseline_ms_per_page": round(b, 1),
                         "ours_ms_per_page": round(o, 1), "ratio": round(o / b, 2)})
        base_rss = peak_rss_mib(
            "import pdfplumber\n"
            f"with pdfplumber.open({str(big)!r}) as pdf: pdf.pages[0].extract_text()\n"
            f"with pdfplumber.open({str(big)!r}) as pdf: [p.extract_tables() for p in pdf.pages]")
        our_rss = peak_rss_mib(f"parse_pdf({str(big)!r})")
    print(f"{'file':<22}{'baseline ms/page':>18}{'ours ms/page':>14}{'ours/baseline':>15}")
    for row in rows:
        print(f"{row['file']:<22}{row['baseline_ms_per_page']:>18}{row['ours_ms_per_page']:>14}{row['ratio']:>15}")
    print(f"peak RSS, 100-page PDF: baseline {base_rss:.0f} MiB, ours {our_rss:.0f} MiB")
    print(json.dumps({"rows": rows, "peak_rss_mib": {"baseline": round(base_rss), "ours": round(our_rss)}}))


if __name__ == "__main__":
    main()
