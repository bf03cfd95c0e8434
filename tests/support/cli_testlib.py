"""Helpers for the client tests (tests/cli): the `schedgen` command as a subprocess in a
clean environment. With `SCHEDGEN_CLI_TRANSCRIPT=FILE` every command and its output are
appended to FILE (the real transcripts in docs/cli.md come from there)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
SCHEDGEN = str(BIN / "schedgen")
TRANSCRIPT = os.environ.get("SCHEDGEN_CLI_TRANSCRIPT")


def cli_env(home: Path, **values: str | None) -> dict[str, str]:
    """A clean environment: no SCHEDGEN_* from outside, HOME (and so the config file) in a
    temporary directory, wide tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDGEN_", "XDG_CONFIG"))}
    env.update({"HOME": str(home), "COLUMNS": "400", "NO_COLOR": "1"})
    env.update({k: v for k, v in values.items() if v is not None})
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 300, stdin: str | None = None):
    done = subprocess.run([SCHEDGEN, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          input=stdin)
    if TRANSCRIPT:
        with open(TRANSCRIPT, "a", encoding="utf-8") as out:
            out.write(f"$ schedgen {shlex.join(args)}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n\n")
    return done
