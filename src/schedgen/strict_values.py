"""Reading settings from strings (environment variables, ConfigMap data) strictly.

A typo must not switch a feature off: `SCHEDGEN_API_REQUIRE_KEY=ture` is an error, not
"false". Each component turns the ValueError into its own clear startup error.
"""

from __future__ import annotations

from typing import Any

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


def coerce(type_name: Any, raw: str) -> Any:
    """`raw` as the dataclass field type `type_name` (bool, int, float, else str)."""
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    if kind == "bool":
        return parse_bool(raw)
    if kind == "int":
        return int(raw.strip())
    if kind == "float":
        return float(raw.strip())
    return raw
