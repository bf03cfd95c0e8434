"""The settings models' common ground (pydantic-settings): the API's and the operator's
settings are `Settings` subclasses, read from environment variables.

Fail-closed: a value that does not parse or breaks a rule is a `ConfigurationError`
(exit 3) naming the variable (`SCHEDGEN_X='v' is invalid: ...`), never a silent
default; a typo must not switch a feature off (`Flag`: `ture` is no boolean). Empty
variables count as unset. Secrets are `SecretStr` (never in a repr or an error).
The runner image carries no pydantic: runner/config.py reads its few variables itself.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from schedgen import logs
from schedgen.errors import ConfigurationError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(raw: Any) -> Any:
    """Strictly one of the usual spellings (pydantic would also take `t`, `y`, `n`...)."""
    if not isinstance(raw, str):
        return raw
    value = raw.strip().lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise ValueError(f"{raw!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


def split_list(raw: Any) -> Any:
    """`a, b` -> ("a", "b") (a list given as such, e.g. by a test, is kept)."""
    return tuple(part.strip() for part in raw.split(",")) if isinstance(raw, str) else raw


Flag = Annotated[bool, BeforeValidator(parse_bool)]
LogFormat = Annotated[Literal["json", "text"], BeforeValidator(lambda v: logs.valid_format(v) if isinstance(v, str) else v)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"],
                     BeforeValidator(lambda v: logs.valid_level(v) if isinstance(v, str) else v)]

_environ: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("schedgen_environ", default=None)


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (`from_env(env)`)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items() if v != ""}


class Settings(BaseSettings):
    """Fields shared by the API and the operator; `from_env` reads them.

    A field's variable is the class's `env_prefix` + its NAME, or its `validation_alias`.
    Built directly (`ApiConfig(namespace="x")`, as tests do) a model reads no environment.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", validate_by_name=True, allow_inf_nan=False,
                                      enable_decoding=False, env_ignore_empty=True, validate_default=True)
    REMOVED: ClassVar[Mapping[str, str]] = {}  # variable -> why it is gone (set: an error)

    database_url: SecretStr = Field(SecretStr(""), validation_alias="SCHEDGEN_DATABASE_URL")
    s3_endpoint_url: str = Field("", validation_alias="SCHEDGEN_S3_ENDPOINT_URL")
    aws_region: str = Field("us-east-1", validation_alias="AWS_REGION")
    # where the operator puts result objects ("": the uploads bucket)
    results_bucket: str = Field("", validation_alias="SCHEDGEN_RESULTS_BUCKET")
    log_format: LogFormat = Field("json", validation_alias="SCHEDGEN_LOG_FORMAT")
    log_level: LogLevel = Field("info", validation_alias="SCHEDGEN_LOG_LEVEL")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, **_: Any) -> tuple:
        environ = _environ.get()
        return (init_settings,) if environ is None else (init_settings, _MappingSource(settings_cls, environ))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings from `env` (default: os.environ), `overrides` winning; a
        ConfigurationError naming every invalid variable."""
        env = os.environ if env is None else env
        for name, why in cls.REMOVED.items():
            if env.get(name):
                raise ConfigurationError(f"{name} is gone: {why}")
        token = _environ.set(env)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigurationError("; ".join(cls._describe(error) for error in exc.errors())) from None
        finally:
            _environ.reset(token)

    @classmethod
    def env_name(cls, key: str) -> str:
        """The variable of field `key` (a field name or an alias)."""
        field = cls.model_fields.get(key)
        if field is None:
            return key
        return field.validation_alias if isinstance(field.validation_alias, str) else (
            cls.model_config.get("env_prefix", "") + key).upper()

    @classmethod
    def _describe(cls, error: Mapping[str, Any]) -> str:
        msg = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            return msg  # a rule over several fields: its message names them
        key = str(error["loc"][0])
        field = cls.model_fields.get(key) or next(
            (f for f in cls.model_fields.values() if f.validation_alias == key), None)
        if field is not None and field.annotation is SecretStr:
            return f"{cls.env_name(key)} is invalid: {msg}"
        return f"{cls.env_name(key)}={str(error['input'])[:200]!r} is invalid: {msg}"


def matching(pattern: Any, what: str) -> AfterValidator:
    """A str rule: "" or a full match of `pattern`, else ValueError("must be `what`")."""

    def check(value: str) -> str:
        if value and not pattern.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)
