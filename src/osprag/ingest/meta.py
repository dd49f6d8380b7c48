"""Document metadata from the places QM documents keep it, mapped onto the schema.

Sources, lowest precedence first: per-folder defaults (``.osp.toml``), the filename convention
``TAG_SUBTAG_Title.ext``, YAML front matter and the QM header line
(``Version: 2.1 | TAG: [QM][REK] | Autor: AL | Zugriff: L3 | Status: AKTIV``), then explicit
overrides from the CLI or config. File facts (path, sha256, size, mtime, language) are added
last and cannot be overridden.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from osprag.errors import IngestError

FOLDER_DEFAULTS = ".osp.toml"

_KEY_MAP = {
    "version": "version",
    "revision": "version",
    "rev": "version",
    "stand": "version",
    "ausgabe": "version",
    "tag": "tag",
    "tags": "tag",
    "autor": "author",
    "author": "author",
    "verantwortlich": "author",
    "owner": "author",
    "ersteller": "author",
    "zugriff": "access_level",
    "zugriffsstufe": "access_level",
    "access": "access_level",
    "access_level": "access_level",
    "vertraulichkeit": "access_level",
    "level": "access_level",
    "status": "status",
    "gültig_ab": "valid_from",
    "gueltig_ab": "valid_from",
    "valid_from": "valid_from",
    "gültig": "valid_from",
    "inkraftsetzung": "valid_from",
    "effective": "valid_from",
    "effective_date": "valid_from",
    "dokumenttyp": "doc_type",
    "doc_type": "doc_type",
    "typ": "doc_type",
    "type": "doc_type",
    "dokumentart": "doc_type",
    "kategorie": "category",
    "category": "category",
    "sprache": "language",
    "language": "language",
    "lang": "language",
    "erstellt": "created_date",
    "created": "created_date",
    "created_date": "created_date",
    "erstellt_am": "created_date",
    "geändert": "last_updated",
    "geaendert": "last_updated",
    "aktualisiert": "last_updated",
    "last_updated": "last_updated",
    "updated": "last_updated",
    "geändert_am": "last_updated",
    "titel": "title",
    "title": "title",
}
_HEADER_PAIR = re.compile(r"^\s*([^:|]{1,40}?)\s*:\s*(.*?)\s*$")
_FILENAME = re.compile(r"^([A-Z][A-Z0-9]{1,7})_([A-Z0-9][A-Z0-9]{0,7})_(.+)$")
_TAGS = re.compile(r"\[([^\]]+)\]")
_DE = set(
    "der die das und ist nicht mit für auf dem den des ein eine einer wird werden sind bei "
    "nach oder auch von zu im sich als wie zur zum über durch muss müssen".split()
)
_EN = set(
    "the and is are of to in for with on be by this that shall must from as an or at "
    "which each all not it".split()
)


def _slug(key: str) -> str:
    text = unicodedata.normalize("NFC", key.strip().lower())
    text = re.sub(r"[\s\-]+", "_", text)
    return re.sub(r"[^0-9a-zäöüß_.]", "", text)


def _ascii_key(key: str) -> str:
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
    return key.translate(table)


def map_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Known aliases onto schema keys; other keys slugified (ASCII) as free metadata."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        slug = _slug(str(key))
        target = _KEY_MAP.get(slug) or _KEY_MAP.get(_ascii_key(slug)) or _ascii_key(slug)
        if not target or target.startswith("osp_"):
            continue
        if target == "tag":
            out.update(parse_tags(value))
            continue
        if isinstance(value, dt.date | dt.datetime):
            value = value.isoformat()[:10]
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        if isinstance(value, dict):
            continue
        out[target] = value
    return out


def parse_tags(value: Any) -> dict[str, str]:
    """``[QM][REK]`` → tag QM, sub_tag REK; ``QM, REK`` likewise."""
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    parts = _TAGS.findall(text) or [p for p in re.split(r"[,;/\s]+", text) if p]
    parts = [p.strip().upper() for p in parts if p.strip()]
    out: dict[str, str] = {}
    if parts:
        out["tag"] = parts[0]
    if len(parts) > 1:
        out["sub_tag"] = parts[1]
    if len(parts) > 2:
        out["tags"] = ",".join(parts)
    return out


def looks_like_header_line(line: str) -> bool:
    pairs = [p for p in line.split("|") if p.strip()]
    return len(pairs) >= 2 and all(_HEADER_PAIR.match(p) for p in pairs)


def parse_header_line(line: str) -> dict[str, Any]:
    """``Key: value | Key: value`` pairs as QM handbooks write them, mapped onto the schema."""
    raw: dict[str, str] = {}
    for part in line.split("|"):
        match = _HEADER_PAIR.match(part)
        if match and match.group(2):
            raw[match.group(1)] = match.group(2)
    return map_keys(raw)


def parse_filename(path: Path) -> dict[str, str]:
    match = _FILENAME.match(path.stem)
    if not match:
        return {}
    title = re.sub(r"[-_]+", " ", match.group(3)).strip()
    return {"tag": match.group(1), "sub_tag": match.group(2), "title": title}


def detect_language(text: str) -> str | None:
    """de or en by stopword counts: enough for whole documents, not for short queries."""
    words = re.findall(r"[a-zäöüß]+", text[:20000].lower())
    if len(words) < 5:
        return None
    de = sum(w in _DE for w in words) + 3 * sum(ch in "äöüß" for ch in text[:20000].lower()) / 10
    en = sum(w in _EN for w in words)
    if de == en == 0:
        return None
    return "de" if de >= en else "en"


def folder_defaults(path: Path, root: Path) -> dict[str, Any]:
    """Merged ``.osp.toml`` files from the synced root down to the file's folder."""
    merged: dict[str, Any] = {}
    try:
        rel_parts = path.parent.resolve().relative_to(root.resolve()).parts
    except ValueError:
        rel_parts = ()
    folder = root
    for part in ("", *rel_parts):
        folder = folder / part if part else folder
        cfg = folder / FOLDER_DEFAULTS
        if cfg.is_file():
            try:
                data = tomllib.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise IngestError(f"invalid folder defaults: {exc}", path=str(cfg)) from None
            merged.update(map_keys(data.get("metadata", data)))
    return merged


def merge_metadata(*layers: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None and v != ""})
    return out
