"""The ParseJob contract: the one place its names and shapes are written down.

Every component imports these instead of spelling them out: the API creates ParseJobs
with these labels and annotations, the operator admits and labels their Jobs, the
runner exits with these codes and writes this summary, and the CRD
(`crds/parsejobs.schedgen.io.yaml`) declares the same phases, priorities and schedule
types (a test holds the CRD to this module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

# --- the resource ------------------------------------------------------------------------

GROUP = "schedgen.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "parsejobs"
KIND = "ParseJob"

# --- labels and annotations ------------------------------------------------------------------

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "schedgen-operator"  # on the runner Jobs and Pods the operator creates
LABEL_CREATED_BY = "app.kubernetes.io/created-by"
CREATED_BY_API = "schedgen-api"  # on ParseJobs the upload API creates
LABEL_PARSEJOB = "schedgen.io/parsejob"
LABEL_PARSEJOB_UID = "schedgen.io/parsejob-uid"
LABEL_TENANT = "schedgen.io/tenant"
LABEL_PRIORITY = "schedgen.io/priority"
LABEL_BATCH = "schedgen.io/batch"  # "true" on a Job that runs several ParseJobs (batch mode)
ANN_MEMBERS = "schedgen.io/members"  # a batch Job's members at admission: {"uid": transitionSeq}
ANN_SIGNATURE = "schedgen.io/signature"  # the operator's HMAC over a runner Job's name and runs

ANN_IDEMPOTENCY = "schedgen.io/idempotency-key-sha256"
ANN_CONTENT = "schedgen.io/content-sha256"
ANN_FILENAME = "schedgen.io/original-filename"
ANN_CREATED = "schedgen.io/created-at"  # the API's creation time, microseconds (orders the job list)

FINALIZER = "schedgen.io/record"  # the operator records the final row before deletion
KOPF_ANNOTATION_PREFIX = "schedgen.io"

# --- spec values ------------------------------------------------------------------------

PRIORITIES = ("high", "normal", "low")  # most urgent first
DEFAULT_PRIORITY = "normal"
SCHEDULE_KINDS = ("lecture", "test", "exam")
SCHEDULE_TYPES = ("auto", *SCHEDULE_KINDS)  # spec.scheduleType: auto-detect or force one
DEFAULT_SCHEDULE_TYPE = "auto"
DEFAULT_DEADLINE_SECONDS = 300  # the CRD's default too
DEFAULT_MAX_RETRIES = 3

# --- status -----------------------------------------------------------------------------

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "Queued", "Running", "Succeeded", "Failed", "Cancelled"
PHASES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_PHASES = frozenset({SUCCEEDED, FAILED, CANCELLED})
CONDITION_TYPES = ("Admitted", "Complete", "Failed")

# --- the runner ---------------------------------------------------------------------------

RUNNER_CONTAINER = "runner"
RUN_AS_ID = 65532  # the images' unprivileged user and group

# Exit codes: the Job's pod failure policy and the operator's classification read them.
EXIT_OK = 0
EXIT_TRANSIENT = 1  # storage/database trouble: retried
EXIT_BAD_INPUT = 2  # the file can never be parsed: fail at once
EXIT_MISCONFIGURED = 3  # the environment is wrong: fail at once
EXIT_OOM_KILLED = 137  # 128 + SIGKILL: the kernel's OOM killer at the memory limit: fail at once

SUMMARY_MAX_BYTES = 4096  # the kubelet keeps at most 4 KiB of a termination message


@dataclass(frozen=True)
class RunnerSummary:
    """What the runner writes to its termination message, one JSON object.

    Success: `{"ok": true, "kind", "events", "pages", "seconds"}`;
    failure: `{"ok": false, "code", "message"}`.
    """

    ok: bool
    kind: str | None = None
    events: int | None = None
    pages: int | None = None
    seconds: float | None = None
    code: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "kind": self.kind, "events": self.events, "pages": self.pages,
                    "seconds": self.seconds}
        return {"ok": False, "code": self.code, "message": self.message or ""}

    def to_json(self, limit: int = SUMMARY_MAX_BYTES) -> str:
        """The JSON in at most `limit` UTF-8 bytes, shortening the message if need be."""
        payload = self.as_dict()
        text = json.dumps(payload, ensure_ascii=False)
        while len(text.encode()) > limit and payload.get("message"):
            excess = len(text.encode()) - limit
            message = payload["message"].removesuffix("…")
            # Dropping n characters drops at least n bytes; "…" costs 3.
            payload["message"] = message[: max(0, len(message) - excess - 3)] + "…"
            text = json.dumps(payload, ensure_ascii=False)
        return text

    @classmethod
    def from_message(cls, message: str | None) -> "RunnerSummary | None":
        """Read a termination message; None when it is not a summary (a crash's stderr)."""
        text = (message or "").strip()
        if not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # untrusted: 4 KiB of "[" is not a summary either
            return None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            return None
        return cls(
            ok=data["ok"],
            kind=_str_or_none(data.get("kind")),
            events=_int_or_none(data.get("events")),
            pages=_int_or_none(data.get("pages")),
            seconds=float(data["seconds"]) if isinstance(data.get("seconds"), (int, float))
            and not isinstance(data.get("seconds"), bool) else None,
            code=_str_or_none(data.get("code")),
            message=_str_or_none(data.get("message")),
        )

    def result(self) -> dict[str, Any]:
        """The `status.result` of a successful run (camelCase, only what is known)."""
        out: dict[str, Any] = {}
        if self.kind:
            out["kind"] = self.kind
        if self.events is not None:
            out["events"] = self.events
        if self.pages is not None:
            out["pages"] = self.pages
        if self.seconds is not None:
            out["parseSeconds"] = round(self.seconds, 3)
        return out


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def priority_of(body: Mapping[str, Any]) -> str:
    """A ParseJob's priority (the CRD admits only PRIORITIES); missing: the default."""
    return (body.get("spec") or {}).get("priority") or DEFAULT_PRIORITY


def tenant_of(body: Mapping[str, Any]) -> str:
    """A ParseJob's tenant: spec.tenant, else its namespace (the CRD's CEL and the tenant
    binding policy say the same)."""
    return (body.get("spec") or {}).get("tenant") or (body.get("metadata") or {}).get("namespace") or ""


def result_key(namespace: str, uid: str) -> str:
    """Where the runner of a ParseJob puts its result object (in the results bucket)."""
    return f"results/{namespace}/{uid}.json"


def result_prefix(namespace: str) -> str:
    """The result objects of one namespace (`result_key` without the uid)."""
    return f"results/{namespace}/"


# --- the typed ParseJob -------------------------------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class ParseJobStatus:
    """What the operator wrote into status, typed; `raw` is the whole status (transitions
    are computed from it, operator/status.py)."""

    phase: str | None = None
    seq: int = 0  # transitionSeq: phase changes so far (status writes are conditional on it)
    attempts: int = 0  # counted runs, the current one included while Running
    prior_attempts: int = 0  # counted runs before the current one (fixed at admission)
    disruptions: int = 0  # runs stopped from outside (eviction, node gone, pod deleted): not attempts
    job_name: str | None = None
    job_uid: str | None = None  # the uid of the Job the operator created for this run
    batch_size: int = 1
    enqueued_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    retry_after: str | None = None  # a retried ParseJob waits in the queue until then
    queue_position: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, status: Mapping[str, Any] | None) -> "ParseJobStatus":
        s = dict(status or {})
        return cls(
            phase=_str(s.get("phase")), seq=_int(s.get("transitionSeq")), attempts=_int(s.get("attempts")),
            prior_attempts=_int(s.get("priorAttempts")), disruptions=_int(s.get("disruptions")),
            job_name=_str(s.get("jobName")),
            job_uid=_str(s.get("jobUid")),
            batch_size=max(1, _int(s.get("batchSize"), 1)), enqueued_at=_str(s.get("enqueuedAt")),
            started_at=_str(s.get("startedAt")), completed_at=_str(s.get("completedAt")),
            retry_after=_str(s.get("retryAfter")),
            queue_position=s.get("queuePosition") if isinstance(s.get("queuePosition"), int) else None, raw=s)

    @property
    def waiting(self) -> bool:
        return self.phase in (None, QUEUED)

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES


@dataclass(frozen=True)
class ParseJob:
    """A ParseJob read once from its object: what the operator and the API use of it.

    Built by `ParseJob.of(body)`; every rule about the object (the tenant, the defaults,
    the result key) is here, so no module reads the dict its own way (compare Kueue's
    `workload.Info`)."""

    namespace: str
    name: str
    uid: str
    tenant: str
    priority: str = DEFAULT_PRIORITY
    schedule_type: str = DEFAULT_SCHEDULE_TYPE
    source_bucket: str | None = None  # None: the operator's default bucket
    source_key: str = ""
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    resources: Mapping[str, Any] | None = None  # spec.resources as written (capped by the operator)
    generation: int | None = None
    created: str = ""  # metadata.creationTimestamp (RFC 3339)
    deleting: bool = False
    tenant_label: str | None = None  # metadata.labels[schedgen.io/tenant], if any
    status: ParseJobStatus = field(default_factory=ParseJobStatus)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "ParseJob":
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        s3 = (spec.get("source") or {}).get("s3") or {}
        resources = spec.get("resources")
        return cls(
            namespace=meta.get("namespace") or "", name=meta.get("name") or "", uid=meta.get("uid") or "",
            tenant=tenant_of(body), priority=priority_of(body),
            schedule_type=spec.get("scheduleType") or DEFAULT_SCHEDULE_TYPE,
            source_bucket=_str(s3.get("bucket")), source_key=s3.get("key") or "",
            deadline_seconds=_int(spec.get("deadlineSeconds")) or DEFAULT_DEADLINE_SECONDS,
            max_retries=_int(spec.get("maxRetries"), DEFAULT_MAX_RETRIES),
            resources=dict(resources) if isinstance(resources, Mapping) and resources else None,
            generation=meta.get("generation"), created=meta.get("creationTimestamp") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            tenant_label=(meta.get("labels") or {}).get(LABEL_TENANT),
            status=ParseJobStatus.of(body.get("status")))

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def log_context(self) -> dict[str, str]:
        """Its fields in a log line (schedgen.logs)."""
        return {"parsejob_uid": self.uid, "parsejob": f"{self.namespace}/{self.name}", "tenant": self.tenant}

    @property
    def phase(self) -> str | None:
        return self.status.phase

    @property
    def result_key(self) -> str:
        return result_key(self.namespace, self.uid)

    def with_status(self, status: Mapping[str, Any]) -> "ParseJob":
        """The same ParseJob with another status (the one just written)."""
        return replace(self, status=ParseJobStatus.of(status))

    def ref(self) -> dict[str, Any]:
        """An object reference (Events, ownerReferences)."""
        return {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}
