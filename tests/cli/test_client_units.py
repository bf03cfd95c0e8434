"""The jobs client without a server: configuration precedence, error shapes, retries,
argument checks, exit codes of the paths that need no API, `--version`,
`schedgen-runner --help`, the runner lock without the client's libraries, and the web
page's router (files, security headers)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from schedgen.client import EXIT_API, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_USAGE, ConfigError, config
from schedgen.client.api import Api, error_of

from cli_testlib import BIN, cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]


# --- configuration ------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_flags_override_env_which_overrides_the_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    write(home / ".config" / "schedgen" / "config.toml", 'url = "http://file:1"\nkey = "sgk_file"\n')
    env = {"HOME": str(home)}
    monkeypatch.setenv("HOME", str(home))  # Path.home() reads HOME
    if True:
        got = config.resolve(env=env)
        assert (got.url, got.key, got.sources["url"]) == ("http://file:1", "sgk_file", str(home / ".config/schedgen/config.toml"))
        got = config.resolve(env={**env, "SCHEDGEN_API_KEY": "sgk_env"})
        assert (got.url, got.key, got.sources["key"]) == ("http://file:1", "sgk_env", "env")
        got = config.resolve(env={**env, "SCHEDGEN_API_URL": "https://env:2/", "SCHEDGEN_API_KEY": "sgk_env"},
                             flag_url="http://flag:3", flag_key="sgk_flag")
        assert (got.url, got.key, got.sources["url"], got.sources["key"]) == ("http://flag:3", "sgk_flag", "flag", "flag")
        got = config.resolve(env={**env, "SCHEDGEN_API_URL": "https://env:2/"})
        assert (got.url, got.key) == ("https://env:2", "sgk_file")  # trailing slash dropped; key from the file


def test_config_file_locations_and_errors(tmp_path):
    xdg = write(tmp_path / "xdg" / "schedgen" / "config.toml", 'url = "http://xdg:1"\n')
    assert config.resolve(env={"XDG_CONFIG_HOME": str(xdg.parents[1])}).url == "http://xdg:1"
    explicit = write(tmp_path / "other.toml", 'url = "http://explicit:1"\n')
    assert config.resolve(env={"SCHEDGEN_CONFIG": str(explicit)}).url == "http://explicit:1"
    assert config.resolve(env={}, config_path=str(explicit)).url == "http://explicit:1"
    bad = {
        "missing": None,
        "toml": "url = \n",
        "unknown": 'url = "http://x:1"\npassword = "x"\n',
        "type": "url = 5\n",
        "scheme": 'url = "ftp://x"\n',
        "query": 'url = "http://x:1/?a=b"\n',
    }
    for name, text in bad.items():
        path = tmp_path / f"{name}.toml"
        if text is not None:
            write(path, text)
        with pytest.raises(ConfigError) as err:
            config.resolve(env={}, config_path=str(path))
        assert err.value.exit_code == EXIT_CONFIG, name
    with pytest.raises(ConfigError, match="no API URL"):
        config.resolve(env={"XDG_CONFIG_HOME": str(tmp_path / "empty")})


def test_a_readable_config_file_with_a_key_is_warned_about(tmp_path, capsys):
    path = write(tmp_path / "c.toml", 'url = "http://x:1"\nkey = "sgk_x"\n')
    path.chmod(0o644)
    config.resolve(env={}, config_path=str(path))
    assert "readable by others" in capsys.readouterr().err


# --- the HTTP client ----------------------------------------------------------------


def response(status: int, body=None, headers=None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def test_both_error_shapes_are_read():
    legacy = error_of(response(404, {"error": {"code": "JobNotFound", "message": "no job 'x'"}}))
    assert (legacy.status, legacy.code, legacy.message, legacy.exit_code) == (404, "JobNotFound", "no job 'x'",
                                                                              EXIT_NOT_FOUND)
    problem = error_of(response(401, {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                      "detail": "the API key is not valid", "code": "InvalidApiKey",
                                      "instance": "/api/v1/jobs/x"}))
    assert (problem.code, problem.message, problem.exit_code) == ("InvalidApiKey", "the API key is not valid",
                                                                  EXIT_CONFIG)
    plain = error_of(response(502, text="bad gateway from the proxy"))
    assert (plain.code, plain.message, plain.exit_code) == ("HTTP502", "bad gateway from the proxy", EXIT_API)


def api_with(handler, **kw) -> tuple[Api, list[float]]:
    slept: list[float] = []
    cfg = config.ClientConfig(url="http://api.test", key="sgk_test", sources={})
    return Api(cfg, transport=httpx.MockTransport(handler), sleep=slept.append, **kw), slept


def test_rate_limited_requests_are_retried_after_retry_after():
    calls = []

    def handler(request: httpx.Request):
        calls.append(request)
        if len(calls) < 3:
            return response(429, {"error": {"code": "RateLimited", "message": "slow down"}}, {"Retry-After": "2"})
        return response(200, {"id": "j1", "phase": "Queued"})

    api, slept = api_with(handler)
    assert api.job("j1")["phase"] == "Queued"
    assert slept == [2.0, 2.0] and len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer sgk_test"


def test_a_long_retry_after_is_reported_not_slept():
    api, slept = api_with(lambda r: response(429, {"error": {"code": "RateLimited", "message": "x"}},
                                             {"Retry-After": "3600"}))
    with pytest.raises(Exception) as err:
        api.job("j1")
    assert err.value.code == "RateLimited" and slept == []


def test_etag_is_sent_back_and_a_304_reuses_the_body():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match") == '"v1"':
            return httpx.Response(304, headers={"ETag": '"v1"'})
        return response(200, {"id": "j1", "phase": "Running"}, {"ETag": '"v1"'})

    api, _ = api_with(handler)
    assert api.job("j1") == api.job("j1") == {"id": "j1", "phase": "Running"}
    assert seen == [None, '"v1"']


def test_a_missing_route_is_reported_as_unsupported():
    api, _ = api_with(lambda r: response(404, {"error": {"code": "NotFound", "message": "Not Found"}}))
    with pytest.raises(Exception) as err:
        api.list_jobs()
    assert err.value.code == "Unsupported" and err.value.exit_code == EXIT_API


# --- the command line without a server ----------------------------------------------


def test_version_and_help(tmp_path):
    env = cli_env(tmp_path)
    done = run_cli("--version", env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"schedgen {importlib.metadata.version('schedgen')}"
    done = run_cli("--help", env=env)
    assert done.returncode == 0 and "exit codes: 0 ok" in done.stdout
    for cmd in ("submit", "events", "jobs"):
        assert "5 job not found" in run_cli(cmd, "--help", env=env).stdout


def test_usage_config_and_unreachable_exit_codes(tmp_path, closed_port):
    env = cli_env(tmp_path)
    assert run_cli("jobs", "get", "../../admin", env=env).returncode == EXIT_USAGE
    assert run_cli("events", "x", "--exclude", "2025-09-10..2025-09-01", env=env).returncode == EXIT_USAGE
    assert run_cli("jobs", "list", "--limit", "0", env=env).returncode == EXIT_USAGE
    done = run_cli("jobs", "get", "abc", env=env)
    assert done.returncode == EXIT_CONFIG and "NoApiUrl" in done.stderr
    done = run_cli("jobs", "get", "abc", "--api-url", f"http://127.0.0.1:{closed_port}", env=env)
    assert done.returncode == EXIT_API and "Unreachable" in done.stderr
    done = run_cli("submit", str(tmp_path / "nope.pdf"), "--api-url", f"http://127.0.0.1:{closed_port}", env=env)
    assert done.returncode == EXIT_USAGE and "FileNotFound" in done.stderr


def test_missing_extra_is_a_clear_configuration_error(tmp_path):
    code = "import sys; sys.modules['rich'] = None; from schedgen.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "jobs", "get", "abc"], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG and "pip install 'schedgen[cli]'" in done.stderr
    # the local commands need no extra
    done = subprocess.run([sys.executable, "-c", code, "parse", "--help"], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_runner_help_exits_0_and_arguments_are_a_configuration_error(tmp_path):
    runner = str(BIN / "schedgen-runner")
    env = {"PATH": "/usr/bin:/bin", "SCHEDGEN_TERMINATION_LOG": str(tmp_path / "term")}
    done = subprocess.run([runner, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SCHEDGEN_SOURCE_URL" in done.stdout and "Exit codes" in done.stdout
    assert not (tmp_path / "term").exists()  # no run was started
    done = subprocess.run([runner, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and '"ConfigurationError"' in (tmp_path / "term").read_text()


def test_the_runner_lock_has_no_client_libraries():
    pins = {line.split("==")[0].lower() for line in (ROOT / "runner" / "requirements.txt").read_text().splitlines()
            if line[:1].isalnum()}
    assert pins and not pins & {"httpx", "rich", "selenium"}


# --- the web page's router ----------------------------------------------------------


class ScriptCheck(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.inline, self.handlers, self.styles = [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [k for k in attrs if k.startswith("on")]
        self.styles += [tag for k in attrs if k == "style"]
        if tag == "script":
            self.scripts.append(attrs.get("src"))
            self._in_script = True
        elif tag == "style":
            self.inline.append("<style>")

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(data)


def test_web_router_serves_the_page_with_a_strict_policy():
    from schedgen.api.routers.web import CSP, router

    app = FastAPI()
    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        check = ScriptCheck()
        check.feed(page.text)
        assert check.scripts == ["/static/app.js"] and not check.inline and not check.handlers and not check.styles
        js = http.get("/static/app.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert js.headers["x-content-type-options"] == "nosniff"
        assert http.get("/static/app.js", headers={"If-None-Match": js.headers["etag"]}).status_code == 304
        assert http.get("/static/style.css").headers["content-type"].startswith("text/css")
        for path in ("/static/index.html", "/static/web.py", "/static/..%2Fweb.py", "/static/nope.js"):
            assert http.get(path).status_code == 404, path
