"""API keys and roles (docs/http-api.md): ``OFFERS_API_KEYS`` is a comma list of ``key:role``.

renderer: offers, events, usage summaries. marketing: experiments and their reports.
consent: consent answers (the customer's consent system). admin: everything, model reload
included. Health and metrics need no key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

Role = Literal["renderer", "marketing", "consent", "admin"]
ROLES: tuple[Role, ...] = ("renderer", "marketing", "consent", "admin")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """Known keys by digest; a lookup compares against every key in constant time."""

    def __init__(self, roles: Mapping[str, str]) -> None:
        unknown = sorted({role for role in roles.values() if role not in ROLES})
        if unknown:
            raise ValueError(f"unknown roles in OFFERS_API_KEYS: {', '.join(unknown)}")
        # Digests have one length, so comparing them tells nothing about a key's length either.
        self._entries: tuple[tuple[bytes, Role], ...] = tuple(
            (_digest(key), role)  # type: ignore[misc]
            for key, role in roles.items()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def role_of(self, presented: str) -> Role | None:
        """The role of a presented key, or None; the time taken does not depend on which matched."""
        digest = _digest(presented)
        found: Role | None = None
        for known, role in self._entries:
            if hmac.compare_digest(known, digest):
                found = role
        return found


def may_call(role: Role, needed: Role) -> bool:
    """Admin may call everything; every other role only its own routes."""
    return role == "admin" or role == needed
