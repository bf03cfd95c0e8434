"""The runner's two presigned URLs: the runner holds no secrets. At admission the
operator presigns (SigV4, its own credentials, for the endpoint as runner pods reach it)
a GET for the ParseJob's PDF and a PUT for its result object, each for one key and valid
a little past the run's deadline."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from schedgen.parsejob import ParseJob

from .config import OperatorConfig

URL_GRACE_SECONDS = 120


def make_client(cfg: OperatorConfig) -> Any:
    """The operator's S3 client (credentials from its environment). The endpoint is the
    one runner pods reach: presigned URLs are signed for that host."""
    return boto3.session.Session().client(
        "s3", endpoint_url=cfg.s3_endpoint_url or None, region_name=cfg.aws_region,
        config=Config(signature_version="s3v4", connect_timeout=3, read_timeout=10,
                      retries={"max_attempts": 2, "mode": "standard"}))


def source_bucket(pj: ParseJob, cfg: OperatorConfig) -> str:
    return pj.source_bucket or cfg.default_bucket


def results_bucket(cfg: OperatorConfig) -> str:
    return cfg.results_bucket or cfg.default_bucket


def urls(client: Any, pj: ParseJob, cfg: OperatorConfig) -> dict[str, str]:
    """{"source": GET of the PDF, "result": PUT of the result object}."""
    expires = pj.deadline_seconds + URL_GRACE_SECONDS
    source = client.generate_presigned_url(
        "get_object", Params={"Bucket": source_bucket(pj, cfg), "Key": pj.source_key}, ExpiresIn=expires)
    result = client.generate_presigned_url(
        "put_object", Params={"Bucket": results_bucket(cfg), "Key": pj.result_key,
                              "ContentType": "application/json"}, ExpiresIn=expires)
    return {"source": source, "result": result}
