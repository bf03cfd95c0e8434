"""Prometheus metrics of the API (served on GET /metrics of a listener of their own,
`SCHEDGEN_API_METRICS_PORT`, never on the public port). Every name starts schedgen_api_;
label values come from fixed sets (a client must not be able to create series)."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("schedgen_api_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("schedgen_api_request_duration_seconds", "Time to answer a request", ["method", "route", "status"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5, 10, 30))
UPLOADS = Counter("schedgen_api_uploads_total", "Uploads accepted (ParseJobs created or replayed)", ["outcome"])
UPLOAD_BYTES = Counter("schedgen_api_upload_bytes_total", "Bytes of accepted uploads")
REJECTIONS = Counter("schedgen_api_rejections_total", "Requests refused, by reason (error code)", ["reason"])
RATE_LIMITED = Counter("schedgen_api_rate_limited_total", "Requests refused by the rate limit", ["route_class"])
BACKEND_ERRORS = Counter("schedgen_api_backend_errors_total", "Failures to reach a backend", ["backend"])
for _outcome in ("created", "replayed"):  # exported at 0 from the start: rate() sees the first uploads
    UPLOADS.labels(outcome=_outcome)

# The method is whatever the client sent: only these become label values, anything else is "other".
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def method_label(method: str) -> str:
    """The `method` label value of a request: a known HTTP method, else "other"."""
    return method if method in METHODS else "other"
