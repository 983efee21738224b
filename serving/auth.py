"""API keys and roles (docs/http-api.md): ``OFFERS_API_KEYS`` is a comma list of ``key:role``.

renderer: offers, events, usage summaries, consent answers. marketing: experiments and their
reports. consent: consent answers only (a key for the customer's consent system). admin:
everything, model reload included. Health and metrics need no key.

A browser that signed in with a key holds a session token instead (:class:`SessionTokens`): signed
with the server's secret, expiring, naming the key only by an HMAC of its digest, so the cookie
never carries the key and stops working once the key is taken out of ``OFFERS_API_KEYS``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

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

    def digests(self) -> tuple[tuple[bytes, Role], ...]:
        """Each known key's SHA-256 digest and role; the keys themselves are not kept."""
        return self._entries

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


SESSION_SALT = "invoice-offers-session"


class SessionTokens:
    """Signed, expiring session tokens for the pages; a token names its key by an HMAC only.

    The role is looked up again from the keys on every use: a key removed from
    ``OFFERS_API_KEYS`` (or given another role) ends or changes its sessions at the next start.
    """

    def __init__(self, keys: ApiKeys, secret: str, max_age_seconds: int) -> None:
        self._secret = secret.encode("utf-8")
        self._serializer = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self.max_age_seconds = max_age_seconds
        self._roles = {self._key_id(digest): role for digest, role in keys.digests()}

    def _key_id(self, digest: bytes) -> str:
        return hmac.new(self._secret, digest, hashlib.sha256).hexdigest()

    def issue(self, presented: str) -> str:
        """A token for a key; the caller has checked that the key is known."""
        return self._serializer.dumps({"key": self._key_id(_digest(presented))})

    def role_of(self, token: str) -> Role | None:
        """The role of a token's key, or None for a token that is forged, expired or revoked."""
        try:
            payload = self._serializer.loads(token, max_age=self.max_age_seconds)
        except BadSignature:  # SignatureExpired is one too
            return None
        key_id = payload.get("key") if isinstance(payload, dict) else None
        return self._roles.get(key_id) if isinstance(key_id, str) else None


def derived_session_secret(api_keys: str) -> str:
    """The session secret when none is configured: an HMAC of the whole key list, the same in every
    worker that reads the same keys, and computable only by someone who knows every key."""
    return hmac.new(SESSION_SALT.encode(), api_keys.encode("utf-8"), hashlib.sha256).hexdigest()
