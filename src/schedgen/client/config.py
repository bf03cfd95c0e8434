"""Where the client finds the API: flags, then the environment, then a TOML file.

Precedence (first set wins): `--api-url`/`--api-key`, `SCHEDGEN_API_URL`/`SCHEDGEN_API_KEY`,
the config file (`--config`, else `$SCHEDGEN_CONFIG`, else
`$XDG_CONFIG_HOME/schedgen/config.toml`, else `~/.config/schedgen/config.toml`) with
top-level `url` and `key`. Stdlib only (tomllib), so it is testable without the extra.
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import ConfigError

MAX_CONFIG_BYTES = 64 * 1024
KEYS = ("url", "key")


@dataclass(frozen=True)
class ClientConfig:
    url: str
    key: str | None
    sources: Mapping[str, str]  # "url"/"key" -> "flag" | "env" | the file's path (for --verbose messages)


def default_path(env: Mapping[str, str]) -> Path:
    if env.get("SCHEDGEN_CONFIG"):
        return Path(env["SCHEDGEN_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "schedgen" / "config.toml"


def read_file(path: Path, *, explicit: bool) -> dict[str, str]:
    """The file's `url`/`key`; a missing default file is empty, a missing explicit one an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError("ConfigNotFound", f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError("ConfigUnreadable", f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("ConfigInvalid", f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("ConfigInvalid", f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ConfigError("ConfigInvalid", f"{path}: unknown setting(s) {', '.join(unknown)} (allowed: url, key)")
    out = {}
    for name in KEYS:
        if name in doc:
            if not isinstance(doc[name], str) or not doc[name].strip():
                raise ConfigError("ConfigInvalid", f"{path}: {name} must be a non-empty string")
            out[name] = doc[name].strip()
    if "key" in out:
        _warn_if_readable(path)
    return out


def _warn_if_readable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} holds an API key and is readable by others; chmod 600 it", file=sys.stderr)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("ConfigInvalid", f"API URL {url!r} must be http(s)://host[:port][/prefix]")
    if parts.query or parts.fragment:
        raise ConfigError("ConfigInvalid", f"API URL {url!r} must not carry a query or fragment")
    return url.rstrip("/")


def resolve(*, flag_url: str | None = None, flag_key: str | None = None, config_path: str | None = None,
            env: Mapping[str, str] | None = None) -> ClientConfig:
    """The effective configuration; ConfigError (exit 3) when no URL is set anywhere."""
    env = os.environ if env is None else env
    explicit = config_path is not None or bool(env.get("SCHEDGEN_CONFIG"))
    path = Path(config_path) if config_path else default_path(env)
    from_file = read_file(path, explicit=explicit)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, flag, var in (("url", flag_url, "SCHEDGEN_API_URL"), ("key", flag_key, "SCHEDGEN_API_KEY")):
        for value, source in ((flag, "flag"), (env.get(var), "env"), (from_file.get(name), str(path))):
            if value and value.strip():
                values[name], sources[name] = value.strip(), source
                break
    if "url" not in values:
        raise ConfigError("NoApiUrl", f"no API URL: pass --api-url, set SCHEDGEN_API_URL or put url = \"...\" "
                          f"in {path}")
    return ClientConfig(url=check_url(values["url"]), key=values.get("key"), sources=sources)
