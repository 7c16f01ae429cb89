"""What goes wrong reaching Label Studio or an image, said once: the error type, the fixes it names, URL redaction.

:mod:`ml_backend.media` (fetching images) and :mod:`ml_backend.tokens` (API keys → headers) both raise
:class:`MediaError` with these fixes. Both import this module and neither imports the other back, so the two stay
independent; media uses tokens, never the reverse.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from model.errors import MiniGPTError

_SECRET_PARAM_PARTS = ("sig", "token", "credential", "key", "secret", "password", "auth")
_MAX_URL_SHOWN = 300

URL_FIX = (
    "set LABEL_STUDIO_URL to Label Studio's address with http:// or https://, e.g. http://localhost:8080 "
    "(from inside Docker: http://host.docker.internal:8080)"
)
REACH_FIX = (
    "check that Label Studio is running and that LABEL_STUDIO_URL (with http://) is reachable from this backend; "
    "inside Docker, localhost is the container itself: use http://host.docker.internal:8080"
)
TOKEN_FIX = (
    "set LABEL_STUDIO_API_KEY to a personal access token (Label Studio > Account & Settings > Personal Access "
    "Token), or to a legacy token if your organization enables legacy tokens"
)
PAT_FIX = (
    "create a new one in Label Studio > Account & Settings > Personal Access Token and put it in LABEL_STUDIO_API_KEY"
)
ROOT_FIX = (
    "set LOCAL_FILES_DOCUMENT_ROOT here to the same folder as Label Studio's LOCAL_FILES_DOCUMENT_ROOT "
    "(in Docker, mount it at that path)"
)


def _one_line(text: str) -> str:
    return " ".join(text.split()) if any(ch in text for ch in "\r\n\t") else text


def _is_secret_param(name: str) -> bool:
    lowered = unquote(name).lower()
    return any(part in lowered for part in _SECRET_PARAM_PARTS)


def redact_url(url: str) -> str:
    """A URL fit for a message or log: no user info, no signature/token query values, one line, not too long."""
    text = "".join(ch if ch.isprintable() else "?" for ch in url)
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is not None:
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if _is_secret_param(pair.split("=", 1)[0]) else pair
            for pair in parts.query.split("&")
        )
        text = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return text if len(text) <= _MAX_URL_SHOWN else text[:_MAX_URL_SHOWN] + "..."


class MediaError(MiniGPTError):
    """An image reference could not be turned into bytes, or Label Studio could not be reached or refused the key.

    ``str()`` names the URL (redacted), the cause and the fix.
    """

    def __init__(self, cause: str, *, url: str | None = None, fix: str | None = None) -> None:
        self.url = redact_url(url) if url is not None else None
        self.cause = _one_line(cause)
        self.fix = _one_line(fix) if fix else None
        message = f"cannot fetch {self.url}: {self.cause}" if self.url is not None else self.cause
        super().__init__(f"{message}; {self.fix}" if self.fix else message)
