"""`schedgen completion bash|zsh|tcsh`: the script shtab writes from the real parser.
The bash one is loaded into a real bash and asked for completions as bash asks its
completion function (COMP_WORDS, COMP_CWORD)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from cli_testlib import cli_env, run_cli

from schedgen.client import EXIT_CONFIG, EXIT_USAGE


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> str:
    home = tmp_path_factory.mktemp("completion")
    done = run_cli("completion", "bash", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    path = home / "schedgen.bash"
    path.write_text(done.stdout)
    return str(path)


def complete(script: str, *words: str, cwd=None) -> list[str]:
    """What bash offers for the command line `words` (the last one being typed)."""
    probe = (f"source {script}\n"
             'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
             "_shtab_schedgen schedgen \"${COMP_WORDS[-1]}\" \"${COMP_WORDS[-2]}\"\n"
             'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", probe, "bash", *words], capture_output=True, text=True, timeout=30,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_options_formats_and_files(bash_script, tmp_path):
    assert set(complete(bash_script, "schedgen", "")) == {"parse", "db", "submit", "jobs", "events", "logs", "queue",
                                                          "completion"}
    assert complete(bash_script, "schedgen", "jobs", "") == ["list", "get", "watch", "cancel", "delete"]
    assert complete(bash_script, "schedgen", "l") == ["logs"]
    # -o offers what that command can print
    assert complete(bash_script, "schedgen", "jobs", "list", "-o", "") == ["table", "wide", "json", "yaml", "name"]
    assert complete(bash_script, "schedgen", "events", "up-x", "--output", "") == ["table", "wide", "json", "yaml",
                                                                                  "ics"]
    assert complete(bash_script, "schedgen", "logs", "up-x", "-o", "") == ["table", "wide", "json", "yaml"]
    assert complete(bash_script, "schedgen", "queue", "-o", "") == ["table", "json", "yaml", "name"]
    assert complete(bash_script, "schedgen", "parse", "a.pdf", "-o", "") == ["json", "ics"]
    assert complete(bash_script, "schedgen", "jobs", "list", "--phase", "F") == ["Failed"]
    assert set(complete(bash_script, "schedgen", "logs", "--")) >= {"--follow", "--output", "--wait-timeout",
                                                                     "--api-url", "--config"}
    assert complete(bash_script, "schedgen", "events", "up-x", "--output-f") == ["--output-file"]
    assert complete(bash_script, "schedgen", "completion", "") == ["bash", "zsh", "tcsh"]
    # files where a command takes files
    (tmp_path / "UP_EXAM_SS.pdf").write_bytes(b"%PDF")
    assert complete(bash_script, "schedgen", "submit", "UP_", cwd=tmp_path) == ["UP_EXAM_SS.pdf"]
    assert complete(bash_script, "schedgen", "events", "up-x", "--output-file", "UP", cwd=tmp_path) == \
        ["UP_EXAM_SS.pdf"]


def test_zsh_and_tcsh_scripts(tmp_path):
    env = cli_env(tmp_path)
    zsh = run_cli("completion", "zsh", env=env)
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef schedgen\n")
    assert "logs:'what happened to a job" in zsh.stdout
    assert ":FORMAT:(table wide json yaml ics)" in zsh.stdout and ":FORMAT:(table json yaml name)" in zsh.stdout
    if shutil.which("zsh"):
        check = subprocess.run(["zsh", "-n"], input=zsh.stdout, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    tcsh = run_cli("completion", "tcsh", env=env)
    assert tcsh.returncode == 0 and "complete schedgen" in tcsh.stdout
    assert "'c/-o=/(table wide json yaml name)/'" in tcsh.stdout
    assert run_cli("completion", "fish", env=env).returncode == EXIT_USAGE


def test_completion_without_shtab_is_a_configuration_error(tmp_path):
    code = "import sys; sys.modules['shtab'] = None; from schedgen.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "completion", "bash"], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG and "pip install 'schedgen[cli]'" in done.stderr
