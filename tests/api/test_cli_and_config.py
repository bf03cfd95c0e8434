"""`schedgen-api add-key` / `revoke-key` against the real Postgres, and the configuration."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from schedgen.api.backends import postgres as api_db
from schedgen.api.config import ApiConfig
from schedgen.errors import ConfigurationError


def run(*args, dsn: str):
    env = {**os.environ, "SCHEDGEN_DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "schedgen.api", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_add_and_revoke_key(postgres, pg_conn):
    done = run("add-key", "--tenant", "cli-team", "--description", "cli test", dsn=postgres.dsn)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("sgk_") and len(key) > 40
    row = pg_conn.execute("SELECT tenant, description, revoked_at, admin, max_priority FROM api_keys"
                          " WHERE key_hash = %s", (api_db.hash_key(key),)).fetchone()
    assert row == ("cli-team", "cli test", None, False, "normal")
    done = run("add-key", "--tenant", "cli-ops", "--admin", "--max-priority", "high", dsn=postgres.dsn)
    assert done.returncode == 0, done.stderr
    assert pg_conn.execute("SELECT tenant, admin, max_priority FROM api_keys WHERE key_hash = %s",
                           (api_db.hash_key(done.stdout.strip()),)).fetchone() == ("cli-ops", True, "high")
    assert run("add-key", "--tenant", "cli-ops", "--max-priority", "urgent", dsn=postgres.dsn).returncode == 2
    assert run("add-key", "--tenant", "Not A Label", dsn=postgres.dsn).returncode == 2
    assert run("revoke-key", key[:12], dsn=postgres.dsn).returncode == 0
    assert pg_conn.execute("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_hash = %s",
                           (api_db.hash_key(key),)).fetchone()[0]
    assert run("revoke-key", key, dsn=postgres.dsn).returncode == 1  # nothing left to revoke


def test_config_from_env():
    cfg = ApiConfig.from_env({
        "SCHEDGEN_DATABASE_URL": "postgresql://x@h/db", "SCHEDGEN_API_NAMESPACE": "uploads",
        "SCHEDGEN_API_MAX_UPLOAD_BYTES": "2048", "SCHEDGEN_API_UPLOADS_PER_MINUTE": "7",
        "SCHEDGEN_API_READS_PER_MINUTE": "70", "SCHEDGEN_API_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
        "SCHEDGEN_API_DEFAULT_TENANT": "public", "SCHEDGEN_API_REQUEST_TIMEOUT_SECONDS": "12.5",
        "SCHEDGEN_API_ALLOW_ANONYMOUS": "true", "SCHEDGEN_LOG_FORMAT": "text", "SCHEDGEN_S3_BUCKET": "b-1"})
    assert (cfg.namespace, cfg.max_upload_bytes, cfg.uploads_per_minute, cfg.reads_per_minute) == ("uploads", 2048, 7, 70)
    assert cfg.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.1/32"))
    assert (cfg.default_tenant, cfg.request_timeout_seconds, cfg.allow_anonymous, cfg.s3_bucket) == ("public", 12.5, True, "b-1")
    defaults = ApiConfig.from_env({})
    assert (defaults.max_upload_bytes, defaults.uploads_per_minute, defaults.reads_per_minute) == (10 * 1024 * 1024, 5, 100)
    assert (defaults.namespace, defaults.default_tenant, defaults.request_timeout_seconds) == ("default", "default", 30.0)
    assert defaults.allow_anonymous is False  # API keys are required unless switched off explicitly
    for bad in ({"SCHEDGEN_API_DEFAULT_TENANT": "Not_OK"}, {"SCHEDGEN_API_UPLOADS_PER_MINUTE": "zero"},
                {"SCHEDGEN_API_TRUSTED_PROXIES": "not-an-ip"}, {"SCHEDGEN_API_READS_PER_MINUTE": "0"}):
        with pytest.raises((ConfigurationError, ValueError)):
            ApiConfig.from_env(bad)


def test_new_settings_parse():
    cfg = ApiConfig.from_env({"SCHEDGEN_API_COMPAT_ROUTES": "on", "SCHEDGEN_API_CORS_ORIGINS":
                              "https://schedule.example.org, http://localhost:3000",
                              "SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS": "5", "SCHEDGEN_API_ERASE_WAIT_SECONDS": "3",
                              "SCHEDGEN_API_PUBLIC_URL": "https://cal.example.org"})
    assert cfg.compat_routes is True and cfg.compat_upload_wait_seconds == 5.0 and cfg.erase_wait_seconds == 3.0
    assert cfg.cors_origins == ("https://schedule.example.org", "http://localhost:3000")
    assert cfg.public_url == "https://cal.example.org"
    default = ApiConfig.from_env({})
    assert default.compat_routes is False and default.cors_origins == () and default.compat_upload_wait_seconds == 20


@pytest.mark.parametrize("env, named", [
    ({"SCHEDGEN_API_ALLOW_ANONYMOUS": "yes please"}, "SCHEDGEN_API_ALLOW_ANONYMOUS"),
    ({"SCHEDGEN_API_REQUIRE_KEY": "false"}, "SCHEDGEN_API_ALLOW_ANONYMOUS"),  # the old switch: gone, said so
    ({"SCHEDGEN_API_TRUSTED_PROXIES": "10.0.0.0/8,,10.1.0.0/16"}, "SCHEDGEN_API_TRUSTED_PROXIES"),
    ({"SCHEDGEN_API_TRUSTED_PROXIES": "10.0.0.0/33"}, "SCHEDGEN_API_TRUSTED_PROXIES"),
    ({"SCHEDGEN_API_DB_POOL_SIZE": "0"}, "SCHEDGEN_API_DB_POOL_SIZE"),
    ({"SCHEDGEN_API_DB_POOL_SIZE": "2.5"}, "SCHEDGEN_API_DB_POOL_SIZE"),
    ({"SCHEDGEN_API_DEFAULT_DEADLINE_SECONDS": "0"}, "SCHEDGEN_API_DEFAULT_DEADLINE_SECONDS"),
    ({"SCHEDGEN_API_DEFAULT_MAX_RETRIES": "-1"}, "SCHEDGEN_API_DEFAULT_MAX_RETRIES"),
    ({"SCHEDGEN_API_IDEMPOTENCY_TTL_SECONDS": "5"}, "SCHEDGEN_API_IDEMPOTENCY_TTL_SECONDS"),
    ({"SCHEDGEN_API_KEY_CACHE_SECONDS": "-1"}, "SCHEDGEN_API_KEY_CACHE_SECONDS"),
    ({"SCHEDGEN_API_QUEUE_CACHE_SECONDS": "nan"}, "SCHEDGEN_API_QUEUE_CACHE_SECONDS"),
    ({"SCHEDGEN_LOG_FORMAT": "xml"}, "SCHEDGEN_LOG_FORMAT"),
    ({"SCHEDGEN_API_NAMESPACE": "Not A Namespace"}, "SCHEDGEN_API_NAMESPACE"),
    ({"SCHEDGEN_API_COMPAT_ROUTES": "ture"}, "SCHEDGEN_API_COMPAT_ROUTES"),
    ({"SCHEDGEN_API_CORS_ORIGINS": "*"}, "SCHEDGEN_API_CORS_ORIGINS"),
    ({"SCHEDGEN_API_CORS_ORIGINS": "https://a.example,,https://b.example"}, "SCHEDGEN_API_CORS_ORIGINS"),
    ({"SCHEDGEN_API_CORS_ORIGINS": "https://a.example/app"}, "SCHEDGEN_API_CORS_ORIGINS"),
    ({"SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS": "61"}, "SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS"),
    ({"SCHEDGEN_API_ERASE_WAIT_SECONDS": "0"}, "SCHEDGEN_API_ERASE_WAIT_SECONDS"),
    ({"SCHEDGEN_API_PUBLIC_URL": "cal.example.org"}, "SCHEDGEN_API_PUBLIC_URL"),
])
def test_invalid_settings_stop_the_start_naming_the_variable(env, named):
    with pytest.raises(ConfigurationError) as err:
        ApiConfig.from_env(env)
    assert named in str(err.value)
    done = subprocess.run([sys.executable, "-m", "schedgen.api", "serve"], capture_output=True, text=True, timeout=60,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")},
                               "SCHEDGEN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", **env})
    assert done.returncode == 3 and named in done.stderr, done.stderr


def test_feed_refresh_minutes():
    assert ApiConfig.from_env({}).feed_refresh_minutes == 360
    assert ApiConfig.from_env({"SCHEDGEN_API_FEED_REFRESH_MINUTES": "0"}).feed_refresh_minutes == 0
    assert ApiConfig.from_env({"SCHEDGEN_API_FEED_REFRESH_MINUTES": "15"}).feed_refresh_minutes == 15
    for bad in ("14", "10081", "-1", "six hours"):
        with pytest.raises(ConfigurationError, match="SCHEDGEN_API_FEED_REFRESH_MINUTES"):
            ApiConfig.from_env({"SCHEDGEN_API_FEED_REFRESH_MINUTES": bad})
