"""Who is asking. Every read takes a principal so that clearance cannot be forgotten."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import InvalidInput

Role = Literal["reader", "editor", "admin"]
_ROLE_RANK = {"reader": 0, "editor": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    """A caller with a clearance 1 (public) … 4 (secret) and a role."""

    name: str
    clearance: int
    role: Role = "reader"

    def __post_init__(self) -> None:
        if isinstance(self.clearance, bool) or self.clearance not in (1, 2, 3, 4):
            raise InvalidInput(f"clearance must be 1..4, got {self.clearance!r}")
        if self.role not in _ROLE_RANK:
            raise InvalidInput(f"role must be reader, editor or admin, got {self.role!r}")

    def has_role(self, role: Role) -> bool:
        return _ROLE_RANK[self.role] >= _ROLE_RANK[role]


LOCAL = Principal(name="local", clearance=4, role="admin")
"""The local CLI and Python API user: whoever can read the data dir can read everything."""
