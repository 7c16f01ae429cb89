"""Text fit for a log line or an error message: URLs without the secrets tasks put in them.

Task image URLs carry credentials in many places: user info (``https://user:password@host``), signed-URL parameters
(``X-Amz-Signature``, ``sig``, ``access_token``), an OAuth fragment (``#access_token=...``), and any of these inside a
parameter value, URL-encoded once or several times (``?next=https%3A%2F%2F...%3Ftoken%3D...``). The redactor does
not parse one URL; it scans text for every shape a secret takes, then looks inside each percent-encoded run by
decoding it and scanning again, so nesting and encoding depth do not hide a secret. It fails closed: a run too deeply
nested to finish is replaced whole.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, unquote_plus

# Parameter names that hold secrets: a name *containing* one of these (any case, once decoded) has its value hidden.
_SECRET_NAME_PARTS = (
    "sig",  # sig, signature, X-Amz-Signature, X-Goog-Signature
    "token",  # access_token, X-Amz-Security-Token, token
    "credential",  # X-Amz-Credential
    "key",  # api_key, apikey, Key-Pair-Id
    "secret",
    "pass",  # password, passwd, pass
    "pwd",
    "auth",
    "session",
    "jwt",
    "bearer",
    "access",  # GoogleAccessId, accessKey
    "private",
    "policy",  # CloudFront's signed policy
    "ticket",
)
HIDDEN = "***"
WINDOW = 4096  # characters of a URL examined; what lies beyond is never shown, so it need not be scanned
MAX_URL_SHOWN = 300
_MAX_DEPTH = 8  # nested values / encodings looked into before a run is hidden whole

# //user:password@host: up to the last @ before the path (a password with an unencoded ? or # still counts)
_USERINFO = re.compile(r"(?<=[/\\]{2})[^/\\\s]*@")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")  # a JWT anywhere: a PAT, an access
# One scan finds, left to right and without overlap, either name=value (the name starting at a boundary, so each
# position is tried once) or a percent-encoded run between separators; each is looked into once: linear per level.
_PIECE = re.compile(
    r"(?<![^\s?&;#/\"',(\[{])(?P<name>[^\s?&;#=/\"',()\[\]{}]++)=(?P<value>[^\s&;#\"']*+)"
    r"|(?P<run>[^\s?&;#=/\"']*%[0-9A-Fa-f]{2}[^\s?&;#=/\"']*)"
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter name says its value is a secret (decoded as often as it was encoded, any case)."""
    for _ in range(_MAX_DEPTH):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_NAME_PARTS)


def _redact(text: str, depth: int) -> str:
    if depth > _MAX_DEPTH:
        return HIDDEN
    text = _USERINFO.sub(HIDDEN + "@", text)
    text = _JWT.sub(HIDDEN, text)

    def piece(match: re.Match[str]) -> str:
        run = match["run"]
        if run is None:
            name, value = match["name"], match["value"]
            if is_secret_name(name):
                return f"{name}={HIDDEN}"
            return f"{name}={_redact(value, depth + 1)}"  # a value may hold a whole URL, or an encoded one
        decoded = unquote_plus(run)
        inner = _redact(decoded, depth + 1)
        # re-encoded only if something was hidden; & ; # and spaces stay encoded so the outer text keeps its shape
        return run if inner == decoded else quote(inner, safe="/:@*=?%!$'()+,~")

    return _PIECE.sub(piece, text)


def redact_text(text: str) -> str:
    """Any text (a log line, an error) with the secrets of the URLs in it hidden; non-printables become '?'."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return _redact(printable, 0)


def redact_url(url: str) -> str:
    """A URL fit for a message or log: no user info, no secret parameter values (nested ones too), one line, short."""
    shown = redact_text(url[:WINDOW])
    return shown if len(shown) <= MAX_URL_SHOWN else shown[:MAX_URL_SHOWN] + "..."


class RedactingFilter(logging.Filter):
    """Redacts a record's final message: for libraries that log request URLs (urllib3 logs path and query at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTERED_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.response", "urllib3.util.retry")
_FILTER = RedactingFilter()


def redact_library_logs() -> None:
    """Pass the HTTP libraries' own log lines (request URLs with signed queries) through the redactor; idempotent."""
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
