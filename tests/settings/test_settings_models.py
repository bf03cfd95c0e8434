"""The settings models (schedgen.settings): each variable's name and rule, fail-closed
errors that name the variable, secrets kept out of reprs and errors, and the runtime
ConfigMap settings that are logged and ignored instead (the operator keeps running)."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from schedgen.api.config import ApiConfig
from schedgen.errors import ConfigurationError
from schedgen.operator.config import MAX_BATCH_SIZE, OperatorConfig, RuntimeConfig
from schedgen.operator.runner_jobs import SINGLE
from schedgen.runner import config as runner_config

DSN = "postgresql://schedgen:hunter2-secret@db.internal:5432/schedgen"


@pytest.mark.parametrize("model", [ApiConfig, OperatorConfig])
def test_the_shared_variables(model):
    cfg = model.from_env({"SCHEDGEN_DATABASE_URL": DSN, "SCHEDGEN_S3_ENDPOINT_URL": "http://s3:9000",
                          "AWS_REGION": "af-south-1", "SCHEDGEN_RESULTS_BUCKET": "results",
                          "SCHEDGEN_LOG_FORMAT": "TEXT", "SCHEDGEN_LOG_LEVEL": " Warning "})
    assert cfg.database_url.get_secret_value() == DSN
    assert (cfg.s3_endpoint_url, cfg.aws_region, cfg.results_bucket) == ("http://s3:9000", "af-south-1", "results")
    assert (cfg.log_format, cfg.log_level) == ("text", "warning")
    defaults = model.from_env({})
    assert (defaults.log_format, defaults.log_level, defaults.aws_region) == ("json", "info", "us-east-1")


@pytest.mark.parametrize("model", [ApiConfig, OperatorConfig])
def test_secrets_stay_out_of_reprs_and_errors(model):
    cfg = model.from_env({"SCHEDGEN_DATABASE_URL": DSN})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg) and "hunter2" not in str(cfg.model_dump())
    with pytest.raises(ConfigurationError) as err:
        model.from_env({"SCHEDGEN_DATABASE_URL": DSN, "SCHEDGEN_LOG_LEVEL": "loud"})
    assert "hunter2" not in str(err.value)


def test_an_invalid_secret_is_named_not_shown():
    from pydantic import field_validator

    class Refusing(ApiConfig):
        @field_validator("database_url")
        @classmethod
        def _refuse(cls, value):
            raise ValueError("no such scheme")

    with pytest.raises(ConfigurationError) as err:
        Refusing.from_env({"SCHEDGEN_DATABASE_URL": DSN})
    assert str(err.value) == "ConfigurationError: SCHEDGEN_DATABASE_URL is invalid: no such scheme"


@pytest.mark.parametrize("env,message", [
    ({"SCHEDGEN_LOG_LEVEL": "loud"}, "SCHEDGEN_LOG_LEVEL='loud' is invalid: 'loud' is not a log level"),
    ({"SCHEDGEN_LOG_FORMAT": "xml"}, "SCHEDGEN_LOG_FORMAT='xml' is invalid: 'xml' is not a log format"),
    ({"SCHEDGEN_API_UPLOADS_PER_MINUTE": "0"}, "SCHEDGEN_API_UPLOADS_PER_MINUTE='0' is invalid: Input should be "
                                               "greater than or equal to 1"),
    ({"SCHEDGEN_API_ERASE_WAIT_SECONDS": "inf"}, "SCHEDGEN_API_ERASE_WAIT_SECONDS='inf' is invalid"),
    ({"SCHEDGEN_API_DEFAULT_TENANT": "x" * 64}, "SCHEDGEN_API_DEFAULT_TENANT='" + "x" * 64 + "' is invalid: must be a DNS"),
    ({"SCHEDGEN_API_METRICS_PORT": "65536"}, "SCHEDGEN_API_METRICS_PORT='65536' is invalid"),
    ({"SCHEDGEN_API_FEED_MAX_DAYS": "3651"}, "SCHEDGEN_API_FEED_MAX_DAYS='3651' is invalid"),
    ({"SCHEDGEN_API_MAX_UPLOAD_BYTES": "1023"}, "SCHEDGEN_API_MAX_UPLOAD_BYTES='1023' is invalid"),
    ({"SCHEDGEN_API_TENANT_READS_PER_MINUTE": "-1"}, "SCHEDGEN_API_TENANT_READS_PER_MINUTE='-1' is invalid"),
    ({"SCHEDGEN_API_MAX_UPLOAD_BYTES": "4096", "SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT": "4095"},
     "SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT must be at least SCHEDGEN_API_MAX_UPLOAD_BYTES"),
    ({"SCHEDGEN_API_REQUIRE_KEY": "false"}, "SCHEDGEN_API_REQUIRE_KEY is gone"),
])
def test_api_errors_name_the_variable_and_the_rule(env, message):
    with pytest.raises(ConfigurationError, match="^ConfigurationError: ") as err:
        ApiConfig.from_env(env)
    assert message in str(err.value)
    assert err.value.exit_code == 3


def test_every_invalid_variable_is_reported_at_once():
    with pytest.raises(ConfigurationError) as err:
        ApiConfig.from_env({"SCHEDGEN_API_DB_POOL_SIZE": "0", "SCHEDGEN_API_WATCH_CACHE": "maybe"})
    assert "SCHEDGEN_API_DB_POOL_SIZE" in str(err.value) and "SCHEDGEN_API_WATCH_CACHE" in str(err.value)


def test_empty_variables_are_unset_and_lists_parse():
    cfg = ApiConfig.from_env({"SCHEDGEN_API_NAMESPACE": "", "SCHEDGEN_API_TRUSTED_PROXIES": "10.0.0.1/8; fd00::1/64",
                              "SCHEDGEN_API_SPOOL_MEMORY_BYTES": "0", "KUBECONFIG": "/k", "SCHEDGEN_S3_BUCKET": "up"})
    assert cfg.namespace == "default" and cfg.spool_memory_bytes == 0 and cfg.kubeconfig == "/k"
    assert cfg.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/64"))
    assert cfg.s3_bucket == "up"


def test_built_directly_a_model_reads_no_environment(monkeypatch):
    """Tests build configs from keywords: the process environment must not leak in."""
    monkeypatch.setenv("SCHEDGEN_API_NAMESPACE", "from-env")
    monkeypatch.setenv("SCHEDGEN_STANDALONE", "true")
    assert ApiConfig().namespace == "default" and ApiConfig.from_env().namespace == "from-env"
    assert OperatorConfig().standalone is False and OperatorConfig.from_env().standalone is True


def test_settings_are_frozen():
    cfg = ApiConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.namespace = "other"


def test_operator_variables():
    cfg = OperatorConfig.from_env({
        "SCHEDGEN_OPERATOR_NAMESPACE": "sg", "SCHEDGEN_OPERATOR_CONFIGMAP": "cm", "SCHEDGEN_RUNNER_IMAGE": "r:1",
        "SCHEDGEN_RUNNER_COMMAND": 'python -m "schedgen.runner.main"', "SCHEDGEN_PRIORITY_CLASSES": "high=h, =x,low=",
        "SCHEDGEN_NODE_SELECTOR": "pool=runners", "SCHEDGEN_RUNNER_TOLERATIONS": '[{"key": "k", "operator": "Exists"}]',
        "SCHEDGEN_RUNNER_AFFINITY": "null", "SCHEDGEN_SOURCE_BUCKETS": "a,b,a", "SCHEDGEN_STANDALONE": "on",
        "SCHEDGEN_TICK_SECONDS": "0.25", "SCHEDGEN_RUNNER_LOG_LEVEL": "debug"})
    assert (cfg.namespace, cfg.configmap, cfg.runner_image) == ("sg", "cm", "r:1")
    assert cfg.runner_command == ("python", "-m", "schedgen.runner.main")
    assert cfg.priority_classes == {"high": "h"} and cfg.node_selector == {"pool": "runners"}
    assert cfg.runner_tolerations == ({"key": "k", "operator": "Exists"},) and cfg.runner_affinity == {}
    assert cfg.source_buckets == ("a", "b") and cfg.standalone is True and cfg.tick_seconds == 0.25
    assert OperatorConfig.from_env({"SCHEDGEN_RUNNER_COMMAND": '["a", "b c"]'}).runner_command == ("a", "b c")


@pytest.mark.parametrize("env,name", [
    ({"SCHEDGEN_RUNNER_TOLERATIONS": '{"key": "k"}'}, "SCHEDGEN_RUNNER_TOLERATIONS"),
    ({"SCHEDGEN_RUNNER_TOLERATIONS": "[1]"}, "SCHEDGEN_RUNNER_TOLERATIONS"),
    ({"SCHEDGEN_RUNNER_AFFINITY": "{"}, "SCHEDGEN_RUNNER_AFFINITY"),
    ({"SCHEDGEN_RUNNER_COMMAND": "python 'unclosed"}, "SCHEDGEN_RUNNER_COMMAND"),
    ({"SCHEDGEN_METRICS_PORT": "9090.5"}, "SCHEDGEN_METRICS_PORT"),
    ({"SCHEDGEN_RUNNER_LOG_LEVEL": "trace"}, "SCHEDGEN_RUNNER_LOG_LEVEL"),
    ({"SCHEDGEN_PARSE_TIMEOUT_SECONDS": "nan"}, "SCHEDGEN_PARSE_TIMEOUT_SECONDS"),
])
def test_operator_errors_name_the_variable(env, name):
    with pytest.raises(ConfigurationError, match=f"{name}=.* is invalid"):
        OperatorConfig.from_env(env)


def test_runner_jobs_get_the_log_level():
    from parsejobs import parsejob

    pj = parsejob("a.upload", namespace="team-a", uid="6f9619ff-8b86-d011-b42d-00c04fc964ff")

    def env(cfg: OperatorConfig) -> dict[str, str]:
        job = SINGLE.build([pj], cfg, {pj.uid: {"source": "https://s/1", "result": "https://s/2"}})
        return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert env(OperatorConfig(log_level="warning"))["SCHEDGEN_LOG_LEVEL"] == "warning"
    assert env(OperatorConfig(log_level="warning", runner_log_level="debug"))["SCHEDGEN_LOG_LEVEL"] == "debug"
    assert env(OperatorConfig(log_format="text"))["SCHEDGEN_LOG_FORMAT"] == "text"


def test_runtime_settings_from_the_configmap_are_clamped_and_bad_ones_ignored(caplog):
    env = {"SCHEDGEN_MAX_CONCURRENT": "7", "SCHEDGEN_BATCH_SIZE": "3"}
    with caplog.at_level(logging.WARNING, logger="schedgen.operator.config"):
        cfg = RuntimeConfig.from_sources(env, {"maxPerTenant": "many", "admissionBurst": "0", "batchMaxSize": "2",
                                              "queuePositionIntervalSeconds": "0.1", "retryBackoffSeconds": "nan"})
    assert cfg.max_concurrent == 7 and cfg.max_per_tenant == 5  # the env's; the default for the bad one
    assert cfg.admission_burst == 1 and cfg.queue_position_interval_seconds == 0.5
    assert cfg.batch_size == 3 and cfg.batch_max_size == 3  # never below batch_size
    assert cfg.retry_backoff_seconds == 10.0
    assert "maxPerTenant='many'" in caplog.text and "retryBackoffSeconds='nan'" in caplog.text
    assert RuntimeConfig.from_sources({}, {"batchSize": "500"}).batch_size == MAX_BATCH_SIZE
    assert RuntimeConfig(batch_size=2, batch_max_size=1).batch_max_size == 2


def test_runner_log_settings():
    env = {"SCHEDGEN_JOB_NAMESPACE": "ns", "SCHEDGEN_JOB_NAME": "j", "SCHEDGEN_TENANT": "t",
           "SCHEDGEN_JOB_UID": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
           "SCHEDGEN_SOURCE_URL": "https://s3/b/k", "SCHEDGEN_RESULT_URL": "https://s3/b/r"}
    cfg = runner_config.load({**env, "SCHEDGEN_LOG_LEVEL": "DEBUG", "SCHEDGEN_LOG_FORMAT": "Text"})
    assert (cfg.log_level, cfg.log_format) == ("debug", "text")
    assert cfg.log_context() == {"parsejob_uid": env["SCHEDGEN_JOB_UID"], "parsejob": "ns/j", "tenant": "t"}
    with pytest.raises(ConfigurationError, match="SCHEDGEN_LOG_LEVEL='trace' must be one of debug, info"):
        runner_config.load({**env, "SCHEDGEN_LOG_LEVEL": "trace"})
