"""Metadata schema (pure logic)."""

from __future__ import annotations

import datetime as dt

import pytest

from osprag import InvalidMetadata
from osprag.metadata import validate_metadata


def v(meta: dict[str, object]) -> dict[str, object]:
    return validate_metadata(meta, default_access_level=4)


def test_normalisation() -> None:
    out = v(
        {
            "access_level": "L3",
            "version": 2,
            "status": " aktiv",
            "language": "DE",
            "valid_from": "01.03.2025",
            "created_date": dt.date(2024, 1, 2),
            "page": 3,
        }
    )
    assert out == {
        "access_level": 3,
        "version": "2",
        "status": "AKTIV",
        "language": "de",
        "valid_from": "2025-03-01",
        "created_date": "2024-01-02",
        "page": 3,
    }


def test_default_level_applied() -> None:
    assert v({})["access_level"] == 4
    assert validate_metadata(None, default_access_level=2) == {"access_level": 2}


@pytest.mark.parametrize(
    "meta",
    [
        {"access_level": 0},
        {"access_level": 5},
        {"access_level": True},
        {"access_level": "L9"},
        {"tags": ["a"]},
        {"nested": {"a": 1}},
        {"author": None},
        {"valid_from": "2025-13-01"},
        {"language": "deutsch"},
        {"osp_internal": 1},
        {"": 1},
        {"x": float("nan")},
        {"source": 5},
        {"version": [1]},
    ],
)
def test_rejected(meta: dict[str, object]) -> None:
    with pytest.raises(InvalidMetadata) as info:
        v(meta)
    assert "metadata" in str(info.value)
