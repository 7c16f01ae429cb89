"""Label Studio API keys → ``Authorization`` headers.

A personal access token (PAT) is a JWT refresh token: it is exchanged at ``/api/token/refresh/`` for a short-lived
access token, which is cached until shortly before it expires. Any other key is a legacy ``Token``.
Keys and access tokens never appear in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from typing import Any

import requests

from .access_errors import PAT_FIX, REACH_FIX, MediaError

log = logging.getLogger(__name__)

_B64URL_PART = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces: safe in an HTTP header
_MAX_MARGIN_S = 30.0  # refresh this long before the access token expires (at most 10% of its lifetime)
_UNKNOWN_LIFETIME_S = 60.0  # an access token without a readable exp is reused this long
_MAX_ANSWER_BYTES = 64 * 1024  # a token exchange answer is a few hundred bytes; more is not Label Studio


def _now() -> float:
    """Monotonic clock (a module function so tests can move time)."""
    return time.monotonic()


def jwt_payload(token: str) -> dict[str, Any] | None:
    """The payload of a JWT-looking string, decoded WITHOUT verifying the signature; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL_PART.match(part) for part in parts):
        return None
    body = parts[1].rstrip("=")
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8 or bad JSON
        return None
    return payload if isinstance(payload, dict) else None


def is_personal_access_token(key: str) -> bool:
    """A PAT is a JWT whose payload says ``token_type: refresh``."""
    payload = jwt_payload(key)
    return payload is not None and payload.get("token_type") == "refresh"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lifetime_s(access: str) -> float:
    """Seconds the access token lives, from exp - iat (immune to clock skew), else exp - now, else a default."""
    payload = jwt_payload(access) or {}
    exp, iat = _number(payload.get("exp")), _number(payload.get("iat"))
    if exp is not None and iat is not None and exp > iat:
        return exp - iat
    if exp is not None:
        return exp - time.time()
    return _UNKNOWN_LIFETIME_S


def _clean_key(api_key: str | None) -> str | None:
    """Strip whitespace and a pasted ``Token ``/``Bearer `` prefix; refuse keys that cannot go into a header."""
    if api_key is None:
        return None
    key = api_key.strip()
    for prefix in ("token ", "bearer "):
        if key.lower().startswith(prefix):
            key = key[len(prefix) :].strip()
    if not key:
        return None
    if not _HEADER_SAFE.match(key):
        raise MediaError(
            "LABEL_STUDIO_API_KEY contains spaces, line breaks or non-ASCII characters",
            fix="copy the token again from Label Studio > Account & Settings and put only the token in "
            "LABEL_STUDIO_API_KEY",
        )
    return key


class LabelStudioAuth:
    """Headers that authenticate this backend to Label Studio; thread-safe."""

    def __init__(
        self, url: str, api_key: str | None, session: requests.Session, timeout_s: float, verify_ssl: bool
    ) -> None:
        self._url = url.rstrip("/")
        self._key = _clean_key(api_key)
        self._is_pat = self._key is not None and is_personal_access_token(self._key)
        self._session = session
        self._timeout_s = timeout_s
        self._verify_ssl = verify_ssl
        self._lock = threading.Lock()
        self._access: str | None = None
        self._valid_until = 0.0

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def is_personal_access_token(self) -> bool:
        return self._is_pat

    def __repr__(self) -> str:
        kind = "personal access token" if self._is_pat else "legacy token" if self._key else "no key"
        return f"LabelStudioAuth({self._url!r}, {kind})"

    def headers(self, *, refresh: bool = False) -> dict[str, str]:
        """``Authorization`` for Label Studio; ``refresh=True`` exchanges the PAT again (after a 401)."""
        if self._key is None:
            return {}
        if not self._is_pat:
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            if refresh or self._access is None or _now() >= self._valid_until:
                self._exchange()
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self) -> None:
        """POST the PAT to /api/token/refresh/ and cache the access token (caller holds the lock)."""
        endpoint = f"{self._url}/api/token/refresh/"
        log.debug("exchanging the personal access token at %s", endpoint)
        try:
            response = self._session.post(
                endpoint,
                json={"refresh": self._key},
                headers={"Authorization": None},  # None drops a session-level header
                timeout=self._timeout_s,
                verify=self._verify_ssl,
                allow_redirects=False,
                stream=True,  # the answer is read below, at most _MAX_ANSWER_BYTES of it
            )
            with response:
                status, answer = response.status_code, b""
                for chunk in response.iter_content(chunk_size=8192) if status == 200 else ():
                    answer += chunk
                    if len(answer) > _MAX_ANSWER_BYTES:
                        break
        except requests.RequestException as err:
            raise MediaError(
                f"cannot reach Label Studio to exchange the personal access token ({type(err).__name__})",
                url=endpoint,
                fix=REACH_FIX,
            ) from None
        if status in (400, 401, 403):
            raise MediaError(
                f"Label Studio refused the personal access token (HTTP {status})", url=endpoint, fix=PAT_FIX
            )
        if status != 200:
            raise MediaError(
                f"Label Studio answered HTTP {status} to the token exchange",
                url=endpoint,
                fix="check that LABEL_STUDIO_URL points at Label Studio itself; if your Label Studio has no "
                "personal access tokens, put a legacy token in LABEL_STUDIO_API_KEY",
            )
        try:
            access = json.loads(answer)["access"] if len(answer) <= _MAX_ANSWER_BYTES else None
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not _HEADER_SAFE.match(access):
            raise MediaError(
                "the token exchange answer has no usable access token",
                url=endpoint,
                fix="check that LABEL_STUDIO_URL points at Label Studio itself",
            )
        lifetime = _lifetime_s(access)
        self._access = access
        self._valid_until = _now() + lifetime - min(_MAX_MARGIN_S, 0.1 * max(lifetime, 0.0))
