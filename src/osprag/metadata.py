"""The chunk metadata schema: known keys are typed and normalised, free keys must be scalars.

Normalising on write is what makes filters behave: Chroma never matches a number against a
string, so ``version`` is always stored as a string and ``access_level`` always as an int.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidMetadata

Scalar = str | int | float | bool
RESERVED_PREFIX = "osp_"

KNOWN_KEYS: dict[str, str] = {
    "doc_type": "document type, e.g. handbook, control_plan, work_instruction",
    "version": "revision as a string, e.g. '2.1'",
    "status": "e.g. AKTIV, ENTWURF, OBSOLET (upper-cased)",
    "language": "ISO 639-1 code, e.g. de, en",
    "source": "file path relative to the synced root",
    "category": "free category",
    "author": "author or owner",
    "created_date": "YYYY-MM-DD",
    "last_updated": "YYYY-MM-DD",
    "valid_from": "YYYY-MM-DD",
    "access_level": "1 (public) … 4 (secret); 'L3' is accepted",
}
_DATE_KEYS = ("created_date", "last_updated", "valid_from")
_STR_KEYS = ("doc_type", "source", "category", "author")
_LEVEL = re.compile(r"^\s*[Ll]?\s*([1-4])\s*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def parse_access_level(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be 1..4 or L1..L4, not a boolean")
    if isinstance(value, int) and 1 <= value <= 4:
        return value
    if isinstance(value, float) and value.is_integer() and 1 <= value <= 4:
        return int(value)
    if isinstance(value, str):
        match = _LEVEL.match(value)
        if match:
            return int(match.group(1))
    raise ValueError(f"must be 1..4 or L1..L4, got {value!r}")


def _parse_date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m-%d", "%d.%m.%Y"):
            try:
                return dt.datetime.strptime(text, fmt).date().isoformat()
            except ValueError:
                continue
    raise ValueError(f"must be a date YYYY-MM-DD (or DD.MM.YYYY), got {value!r}")


def _normalise(key: str, value: Any) -> Scalar:
    if key == "access_level":
        return parse_access_level(value)
    if key in _DATE_KEYS:
        return _parse_date(value)
    if key == "version":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"must be a string or number, got {type(value).__name__}")
        return str(value).strip()
    if key == "status":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        return value.strip().upper()
    if key == "language":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{2,3}", value.strip()):
            raise ValueError(f"must be an ISO 639-1 code such as de or en, got {value!r}")
        return value.strip().lower()
    if key in _STR_KEYS and not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if value is None:
        raise ValueError("is None; omit the key instead")
    if isinstance(value, dict | list | tuple | set):
        raise ValueError(f"is a nested {type(value).__name__}; only str, int, float, bool")
    if isinstance(value, float) and value != value:
        raise ValueError("is NaN")
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"has unsupported type {type(value).__name__}")
    return value


def validate_metadata(
    metadata: Mapping[str, Any] | None,
    *,
    default_access_level: int,
    where: str = "metadata",
    allow_reserved: bool = False,
) -> dict[str, Scalar]:
    """A clean copy of ``metadata`` or ``InvalidMetadata`` naming the key and the problem."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(f"{where} must be a mapping, got {type(metadata).__name__}")
    clean: dict[str, Scalar] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InvalidMetadata(
                f"{where}: key {key!r} is not a valid name",
                hint="use letters, digits, _ . - (max 64)",
            )
        if key.startswith(RESERVED_PREFIX) and not allow_reserved:
            raise InvalidMetadata(f"{where}: key {key!r} uses the reserved prefix osp_")
        try:
            clean[key] = _normalise(key, value)
        except ValueError as exc:
            raise InvalidMetadata(f"{where}.{key} {exc}") from None
    clean.setdefault("access_level", default_access_level)
    return clean


def validate_update_metadata(metadata: Mapping[str, Any], *, where: str) -> dict[str, Scalar]:
    """Like ``validate_metadata`` but without defaults: an update merges into what is stored."""
    clean = validate_metadata(metadata, default_access_level=0, where=where)
    if clean.get("access_level") == 0:
        del clean["access_level"]
    return clean
