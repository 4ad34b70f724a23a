"""How settings read text: booleans, sizes with units, and a field's value from the environment."""

from __future__ import annotations

from typing import Any

__all__ = ["ENV_PREFIX", "coerce", "parse_bool", "parse_size"]

ENV_PREFIX = "MODELHOST_"


def coerce(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            return parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None
    return raw


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(raw: str) -> int:
    """Bytes from ``"1500000"``, ``"512MB"`` or ``"2GiB"`` (binary units with an ``i``)."""
    text = raw.strip().lower().removesuffix("b")
    binary = text.endswith("i")
    text = text.removesuffix("i")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {raw!r} (examples: 500000000, 512MB, 2GiB)") from None
    scale = 1024 ** "kmgt".index(unit) * 1024 if binary and unit else _SIZE_UNITS[unit]
    if value < 0:
        raise ValueError(f"a size cannot be negative: {raw!r}")
    return int(value * scale)
