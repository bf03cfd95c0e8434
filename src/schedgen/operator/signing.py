"""The operator's signature on the runner Jobs it makes: an HMAC-SHA256, with a key only
the operator holds, over the Job's namespace, name and the runs it serves (each ParseJob's
uid and transitionSeq). After a restart that cut admission short (the Job created, the
Running status not written), the operator adopts an orphan Job only when it carries a
valid signature for the ParseJob as it waits now: its own, not one someone else made
with the same name and owner reference (those are deleted).

The key: SCHEDGEN_JOB_SIGNING_KEY, else derived from the operator's own S3 secret key
(AWS_SECRET_ACCESS_KEY, which it holds to presign), else random per process (then an
orphan of an earlier process is deleted and its runs run again, never adopted blind).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

DOMAIN = b"schedgen runner job v1"


class Signer:
    def __init__(self, key: bytes):
        self.key = hmac.new(key, DOMAIN, hashlib.sha256).digest()  # never the raw secret itself

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Signer":
        env = os.environ if env is None else env
        raw = env.get("SCHEDGEN_JOB_SIGNING_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
        if not raw:
            log.warning("no SCHEDGEN_JOB_SIGNING_KEY (nor S3 secret key): runner Jobs are signed with a key of "
                        "this process only; after a restart, its orphan Jobs are replaced, not adopted")
            return cls(secrets.token_bytes(32))
        return cls(raw.encode())

    def sign(self, namespace: str, name: str, runs: Iterable[tuple[str, int]]) -> str:
        message = "\n".join([namespace, name, *sorted(f"{uid}:{seq}" for uid, seq in runs)])
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()

    def valid(self, signature: str | None, namespace: str, name: str, runs: Iterable[tuple[str, int]]) -> bool:
        return bool(signature) and hmac.compare_digest(signature, self.sign(namespace, name, runs))
