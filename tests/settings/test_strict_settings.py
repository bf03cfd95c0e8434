"""A typo in a setting stops the start with a clear error instead of switching a feature
off (`SCHEDGEN_API_REQUIRE_KEY=ture` used to mean "off"; that switch is now SCHEDGEN_API_ALLOW_ANONYMOUS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schedgen.api.config import ApiConfig
from schedgen.errors import ConfigurationError
from schedgen.operator.config import OperatorConfig
from schedgen.settings import parse_bool

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                       ("0", False), ("false", False), ("no", False), ("Off", False)])
def test_booleans_in_every_usual_spelling(raw, value):
    assert parse_bool(raw) is value


@pytest.mark.parametrize("raw", ["ture", "flase", "2", "enabled", "y", "-"])
def test_anything_else_is_not_a_boolean(raw):
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool(raw)


@pytest.mark.parametrize("env,name", [
    ({"SCHEDGEN_API_ALLOW_ANONYMOUS": "ture"}, "SCHEDGEN_API_ALLOW_ANONYMOUS"),
    ({"SCHEDGEN_API_WATCH_CACHE": "nope"}, "SCHEDGEN_API_WATCH_CACHE"),
    ({"SCHEDGEN_API_UPLOADS_PER_MINUTE": "5/min"}, "SCHEDGEN_API_UPLOADS_PER_MINUTE"),
    ({"SCHEDGEN_API_TRUSTED_PROXIES": "10.0.0.0/33"}, "SCHEDGEN_API_TRUSTED_PROXIES"),
])
def test_api_refuses_invalid_values(env, name):
    with pytest.raises(ConfigurationError, match=name):
        ApiConfig.from_env(env)


@pytest.mark.parametrize("env,name", [
    ({"SCHEDGEN_STANDALONE": "ture"}, "SCHEDGEN_STANDALONE"),
    ({"SCHEDGEN_MAX_PAGES": "many"}, "SCHEDGEN_MAX_PAGES"),
    ({"SCHEDGEN_TICK_SECONDS": "fast"}, "SCHEDGEN_TICK_SECONDS"),
    ({"SCHEDGEN_RUNNER_COMMAND": '["unclosed"'}, "SCHEDGEN_RUNNER_COMMAND"),
])
def test_operator_refuses_invalid_values(env, name):
    with pytest.raises(ConfigurationError, match=name):
        OperatorConfig.from_env(env)


@pytest.mark.parametrize("command,env", [
    ("schedgen-operator", {"SCHEDGEN_STANDALONE": "ture"}),
    ("schedgen-api", {"SCHEDGEN_API_ALLOW_ANONYMOUS": "ture"}),
])
def test_the_commands_stop_at_start_saying_which_setting(command, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
    done = subprocess.run([str(BIN / command)], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, done.stderr
    assert f"{next(iter(env))}='ture' is invalid" in done.stderr and "not a boolean" in done.stderr
