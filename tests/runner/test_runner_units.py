"""In-process pieces of the runner: the message budget, the hard timeout, config."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedgen.errors import ConfigurationError, ParseTimeout
from schedgen.runner import config
from schedgen.parsejob import RunnerSummary
from schedgen.runner.parsing import hard_deadline as hard_timeout


@settings(max_examples=200, deadline=None)
@given(message=st.text(max_size=6000), code=st.text(max_size=40))
def test_termination_message_always_fits(message, code):
    text = RunnerSummary(ok=False, code=code, message=message).to_json()
    assert len(text.encode()) <= 4096
    assert RunnerSummary.from_message(text).code == code
    decoded = json.loads(text)
    assert decoded["code"] == code
    if len(message.encode()) < 3000:
        assert decoded["message"] == message


def test_hard_timeout_interrupts_a_stuck_loop():
    started = time.monotonic()
    with pytest.raises(ParseTimeout):
        with hard_timeout(0.2):
            while True:
                pass
    assert time.monotonic() - started < 2


def test_hard_timeout_is_cancelled_after_the_block():
    with hard_timeout(0.1):
        pass
    time.sleep(0.2)  # would raise if the alarm were still armed


REQUIRED = {
    "SCHEDGEN_JOB_NAMESPACE": "ns", "SCHEDGEN_JOB_NAME": "j", "SCHEDGEN_TENANT": "t",
    "SCHEDGEN_JOB_UID": "6F9619FF-8B86-D011-B42D-00C04FC964FF", 
    "SCHEDGEN_SOURCE_URL": "https://s3.example/b/k.pdf?X-Amz-Signature=s",
    "SCHEDGEN_RESULT_URL": "https://s3.example/b/results/ns/r.json?X-Amz-Signature=s",
}


def test_config_defaults():
    cfg = config.load(REQUIRED)
    assert cfg.job_uid == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert (cfg.schedule_type, cfg.max_bytes, cfg.max_pages) == ("auto", 10 * 2**20, 100)
    assert (cfg.parse_timeout_seconds, cfg.max_memory_mb, cfg.log_format) == (60.0, 512, "json")
    assert cfg.termination_log == "/dev/termination-log" and cfg.source_url.startswith("https://")


def test_termination_path_precedence():
    env = dict(REQUIRED, TERMINATION_MESSAGE_PATH="/from-env")
    assert config.load(env).termination_log == "/from-env"
    assert config.load(dict(env, SCHEDGEN_TERMINATION_LOG="/explicit")).termination_log == "/explicit"


@pytest.mark.parametrize("name,value", [
    ("SCHEDGEN_MAX_PAGES", "0"), ("SCHEDGEN_PARSE_TIMEOUT_SECONDS", "nan"),
    ("SCHEDGEN_PARSE_TIMEOUT_SECONDS", "inf"), ("SCHEDGEN_MAX_MEMORY_MB", "-1"),
    ("SCHEDGEN_LOG_FORMAT", "xml"), ("SCHEDGEN_JOB_NAME", " "),
    ("SCHEDGEN_SOURCE_URL", "file:///etc/passwd"), ("SCHEDGEN_RESULT_URL", "s3://b/k"),
])
def test_config_rejects(name, value):
    with pytest.raises(ConfigurationError, match=name):
        config.load(dict(REQUIRED, **{name: value}))


def test_error_mapping():
    from schedgen.errors import CorruptPDF
    from schedgen.runner.run import as_error
    from schedgen.runner.parsing import _typed

    unexpected = as_error(RuntimeError("boom"))
    assert (unexpected.code, unexpected.exit_code) == ("InternalError", 1)
    assert (as_error(MemoryError()).code, as_error(MemoryError()).exit_code) == ("MemoryLimitExceeded", 2)
    try:
        try:
            raise MemoryError()
        except MemoryError as exc:
            raise RuntimeError("pdfminer failed") from exc
    except RuntimeError as wrapped:
        mapped = _typed(wrapped, "page 1 cannot be read")
    assert (mapped.code, mapped.exit_code) == ("MemoryLimitExceeded", 2)
    assert as_error(CorruptPDF("x")).code == "CorruptPDF"
