"""Hostile PDFs (written by `hostile.py`) end small, quick and typed.

Each case runs `schedgen parse` as a fresh process, as a user (or the runner) would,
and must end with exit 2 and its error code, within a peak RSS of 150 MiB and in
bounded time. The peak is measured by a small Python process that starts `schedgen`
and reads `getrusage(RUSAGE_CHILDREN).ru_maxrss` afterwards: the child's own peak
(plus at most that small parent's size, which Linux counts in when it execs).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from pdfminer import pdftypes
from pdfminer.ccitt import ccittfaxdecode
from pdfminer.lzw import lzwdecode
from pdfminer.runlength import rldecode

import hostile
import schedule_pdfs
from schedgen.errors import BadInput, CorruptPDF, TooLarge, TooManyPages
from schedgen.runner import pdfbounds
from schedgen.runner.parsing import Limits, parse_pdf

SCHEDGEN = str(Path(sys.executable).with_name("schedgen"))
PEAK_RSS_MIB = 150
SECONDS = 20.0  # generous for a busy 2-core machine; each case takes well under 3 s alone

PROBE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"exit": done.returncode, "stderr": done.stderr, "seconds": time.monotonic() - started,
                  "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_parse(path: Path, *args: str) -> dict:
    """`schedgen parse PATH ARGS` in a fresh process: exit, stderr, seconds, peak RSS."""
    done = subprocess.run([sys.executable, "-c", PROBE, SCHEDGEN, "parse", str(path), *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(hostile.CASES))
def test_hostile_pdf_ends_small_quick_and_typed(name, tmp_path):
    build, code = hostile.CASES[name]
    path = tmp_path / f"{name}.pdf"
    build(path)
    result = run_parse(path)
    last_line = result["stderr"].strip().splitlines()[-1]
    assert result["exit"] == 2, result["stderr"][-2000:]
    assert last_line.startswith(f"error: {code}: "), result["stderr"][-2000:]
    assert result["peak_mib"] < PEAK_RSS_MIB, result
    assert result["seconds"] < SECONDS, result


def test_hostile_files_are_small():
    """The bombs are what an upload can carry: far below the 10 MiB upload limit."""
    assert len(hostile.zeros_deflated()) < 250 * 1024


def test_pages_are_counted_not_taken_from_the_page_tree(tmp_path):
    path = tmp_path / "lie.pdf"
    hostile.page_count_lie(path)
    with pytest.raises(TooManyPages, match="has 150 pages; the limit is 100"):
        parse_pdf(path)
    hostile.many_pages_declared_few(path)
    with pytest.raises(TooManyPages, match="has more than 1000 pages"):
        parse_pdf(path)


@pytest.mark.parametrize(("name", "message"), [
    ("self_reference", "object 4 of the PDF refers to itself"),
    ("deep_array", "the PDF cannot be read: its objects are nested too deeply"),
    ("deep_content_array", "page 1 cannot be read: its objects are nested too deeply"),
    ("parent_loop", "page 1 has no MediaBox (page size), on it or above it"),
    ("inflate_bomb_corrupted", "a stream of the PDF decodes to more than 8388608 bytes"),
    ("ruling_grid", "page 1 is ruled by a grid of 22500 line crossings; the limit is 5000"),
])
def test_hostile_errors_say_what_is_wrong(name, message, tmp_path):
    path = tmp_path / f"{name}.pdf"
    hostile.CASES[name][0](path)
    with pytest.raises(BadInput) as info:
        parse_pdf(path)
    assert info.value.exit_code == 2 and message in info.value.message


def test_a_stream_is_never_inflated_past_the_cap(tmp_path):
    """The 150 MiB bomb stops at the per-stream cap; a smaller cap stops it sooner."""
    path = tmp_path / "bomb.pdf"
    hostile.inflate_bomb(path)
    with pytest.raises(TooLarge, match="a stream of the PDF decodes to more than 1048576 bytes"):
        parse_pdf(path, limits=Limits(max_stream_bytes=1024 * 1024))


def test_all_streams_together_are_bounded(tmp_path):
    """Many streams each under the per-stream cap still meet the document's budget."""
    path = tmp_path / "lectures.pdf"
    schedule_pdfs.lecture_pdf(path, pages=20)
    with pytest.raises(TooLarge, match="decode to more than 40000 bytes together"):
        parse_pdf(path, limits=Limits(max_decoded_bytes=40_000))
    assert parse_pdf(path).pages == 20


def test_forms_count_each_time_they_are_drawn(tmp_path):
    path = tmp_path / "fan.pdf"
    hostile.form_fan_out(path)
    with pytest.raises(TooLarge, match="bytes of drawing instructions"):
        parse_pdf(path, limits=Limits(max_graphics_per_page=10**9, max_content_bytes_per_page=10_000))


@pytest.mark.parametrize("data", [
    b"", b"BT (x) Tj ET", bytes(range(256)) * 40, b"0 0 m 1 1 l S\n" * 3000,
    random.Random(7).randbytes(20_000),
])
def test_bounded_decoders_decode_as_pdfminer_does(data):
    """Inside a budget the decoders give pdfminer's results, byte for byte."""
    packed = zlib.compress(data)
    with pdfbounds.decoding_budget(1 << 20, 1 << 22):
        assert pdftypes.zlib.decompress(packed) == data
        with pytest.raises(zlib.error):
            pdftypes.zlib.decompress(packed[: len(packed) // 2])  # truncated, as zlib says
        assert pdftypes.decompress_corrupted(packed[:-1]) == data  # checksum damaged
        assert pdftypes.decompress_corrupted(packed[:-4] + b"\xff\xff\xff\xff") == data
        runs = _runlength_encode(data)
        assert pdftypes.rldecode(runs) == rldecode(runs) == data
        lzw = _lzw_encode(data[:1500])  # within one LZW table (4096 codes)
        assert pdftypes.lzwdecode(lzw) == lzwdecode(lzw) == data[:1500]


def test_decoders_are_pdfminers_own_outside_a_budget():
    packed = zlib.compress(b"\0" * (3 << 20))
    with pdfbounds.decoding_budget(1 << 20, 1 << 22):
        with pytest.raises(TooLarge):
            pdftypes.zlib.decompress(packed)
        with pytest.raises(TooLarge):
            pdftypes.decompress_corrupted(packed[:-2])
        with pytest.raises(TooLarge):
            pdftypes.rldecode(b"\x81\0" * 30_000)  # 128 bytes per 2
        with pytest.raises(CorruptPDF, match="fax-compressed"):
            pdftypes.ccittfaxdecode(b"\0" * 8, {"K": -1, "Columns": 8})
    assert len(pdftypes.zlib.decompress(packed)) == 3 << 20
    assert pdftypes.ccittfaxdecode(b"", {"K": -1, "Columns": 8}) == ccittfaxdecode(b"", {"K": -1, "Columns": 8})


def test_parsing_leaves_no_budget_behind():
    parse_pdf(schedule_pdfs.FIXTURES / "up" / "UP_TST_PDF.pdf")
    assert pdfbounds._BUDGET.get() is None


def test_mutilated_real_pdfs_fail_typed(tmp_path):
    """Random damage to a real export (flipped bytes, cut objects) succeeds or ends in a
    BadInput subclass, whatever pdfminer raised inside: never an untyped exception."""
    original = (schedule_pdfs.FIXTURES / "up" / "UP_TST_PDF.pdf").read_bytes()
    rng = random.Random(2025)
    outcomes: dict[str, int] = {}
    for attempt in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):
            at = rng.randrange(len(data) - 64)
            if rng.random() < 0.3:
                del data[at:at + rng.randint(1, 64)]
            else:
                data[at] = rng.randrange(256)
        path = tmp_path / f"mutant-{attempt}.pdf"
        path.write_bytes(bytes(data))
        try:
            parse_pdf(path, limits=Limits(max_seconds=10))
            outcome = "ok"
        except BadInput as exc:
            outcome = exc.code
        finally:
            path.unlink()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) - {"ok"}, outcomes  # the damage was noticed at least sometimes


def test_memory_error_is_memory_limit_exceeded(tmp_path):
    """Out of memory in a parse (here: a page of a million characters under an address
    space limit 8 MiB above the loaded program) is the typed MemoryLimitExceeded, exit 2,
    not an InternalError."""
    path = tmp_path / "chars.pdf"
    hostile.char_flood(path)
    code = (
        "import resource, sys\n"
        "from schedgen.cli import main\n"
        "import schedgen.runner.cli_parse  # loaded before the limit, as the runner does\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 8 * 2**20, resource.RLIM_INFINITY))\n"
        f"sys.exit(main(['parse', {str(path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: MemoryLimitExceeded: the PDF needs more memory than the parser may use")


def _runlength_encode(data: bytes) -> bytes:
    out = bytearray()
    for at in range(0, len(data), 128):
        chunk = data[at:at + 128]
        if len(set(chunk)) == 1 and len(chunk) > 1:
            out += bytes([257 - len(chunk), chunk[0]])
        else:
            out += bytes([len(chunk) - 1]) + chunk
    return bytes(out + b"\x80")


def _lzw_encode(data: bytes) -> bytes:
    """The PDF's LZW (8-bit, early change), enough to test the decoder with."""
    table = {bytes([n]): n for n in range(256)}
    bits, nbits, codes = [], 9, [256]
    word = b""
    for byte in data:
        candidate = word + bytes([byte])
        if candidate in table:
            word = candidate
            continue
        codes.append(table[word])
        table[candidate] = len(table) + 2
        word = bytes([byte])
    if word:
        codes.append(table[word])
    codes.append(257)
    size = 258
    for position, code in enumerate(codes):
        bits.append(format(code, f"0{nbits}b"))
        if position > 1:
            size += 1
        if size >= (1 << nbits) - 1 and nbits < 12:
            nbits += 1
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
