"""What goes wrong reaching Label Studio or an image, said once: the error type and the fixes it names.

:mod:`label_studio_access.media` (fetching images) and :mod:`label_studio_access.tokens` (API keys → headers) both raise
:class:`MediaError` with these fixes. Both import this module and neither imports the other back, so the two stay
independent; media uses tokens, never the reverse.
"""

from __future__ import annotations

from model.errors import MiniGPTError

from .redaction import redact_text, redact_url

__all__ = ["PAT_FIX", "REACH_FIX", "ROOT_FIX", "TOKEN_FIX", "URL_FIX", "MediaError", "redact_url"]

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


class MediaError(MiniGPTError):
    """An image reference could not be turned into bytes, or Label Studio could not be reached or refused the key.

    ``str()`` names the URL, the cause and the fix; URLs in the URL and the cause are redacted
    (label_studio_access.redaction).
    """

    def __init__(self, cause: str, *, url: str | None = None, fix: str | None = None) -> None:
        self.url = redact_url(url) if url is not None else None
        self.cause = redact_text(_one_line(cause))
        self.fix = _one_line(fix) if fix else None
        message = f"cannot fetch {self.url}: {self.cause}" if self.url is not None else self.cause
        super().__init__(f"{message}; {self.fix}" if self.fix else message)
