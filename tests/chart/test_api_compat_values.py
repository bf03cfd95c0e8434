"""The chart's values for the API's compatibility routes, CORS and feed URLs (docs/api.md)
reach the API's environment, and the schema refuses what the API would refuse."""

from __future__ import annotations

import pytest
from chartlib import one, render


def api_env(values: dict) -> dict:
    api = one(render(values), "Deployment", "schedgen-api")
    return {e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_defaults_switch_compat_routes_and_cors_off():
    env = api_env({})
    assert env["SCHEDGEN_API_COMPAT_ROUTES"] == "false" and env["SCHEDGEN_API_CORS_ORIGINS"] == ""
    assert env["SCHEDGEN_API_PUBLIC_URL"] == "" and env["SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS"] == "20"


def test_values_reach_the_api_and_parse_there():
    from schedgen.api.config import ApiConfig

    env = api_env({"api": {"compatRoutes": True, "compatUploadWaitSeconds": 7.5,
                           "corsOrigins": ["https://schedule.example.org", "http://localhost:3000"],
                           "publicUrl": "https://cal.example.org/schedgen"},
                   "s3": {"resultsBucket": "results"}})
    cfg = ApiConfig.from_env({k: v for k, v in env.items() if v is not None and k.startswith(("SCHEDGEN_API_C",
                                                                                             "SCHEDGEN_API_P",
                                                                                             "SCHEDGEN_RESULTS"))})
    assert cfg.compat_routes is True and cfg.compat_upload_wait_seconds == 7.5
    assert cfg.cors_origins == ("https://schedule.example.org", "http://localhost:3000")
    assert cfg.public_url == "https://cal.example.org/schedgen" and cfg.results_bucket == "results"


@pytest.mark.parametrize("api", [{"corsOrigins": ["*"]}, {"corsOrigins": ["https://a.example/path"]},
                                 {"compatUploadWaitSeconds": 90}, {"compatRoutes": "yes"},
                                 {"publicUrl": "ftp://x"}])
def test_schema_refuses_bad_values(api):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError):
        render({"api": api})
