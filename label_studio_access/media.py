"""The image reference in a Label Studio task → image bytes, safely.

Policy: Label Studio paths (``/data/...``) are downloaded from ``LABEL_STUDIO_URL`` with auth; ``/data/local-files/``
is read from ``LOCAL_FILES_DOCUMENT_ROOT`` when set, never outside it, however the path is spelled (dot segments,
doubled slashes, percent-encoding: it is canonicalised before the decision); http(s) URLs only from Label Studio (with
auth) or from ``MINIGPT_ALLOWED_HOSTS`` (never with auth); cloud URIs via Label Studio's presign endpoint.
Redirects are followed by hand, each hop checked against the same policy; the token goes only to a request that
started at Label Studio and never crossed to another origin. Every download runs under a total deadline and a byte
budget (:mod:`label_studio_access.downloads`). Tokens never reach messages or logs, nor do secrets in task URLs
(:mod:`label_studio_access.redaction`); remote reason phrases are not repeated.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

import requests

from .access_errors import PAT_FIX, REACH_FIX, ROOT_FIX, TOKEN_FIX, URL_FIX, MediaError, redact_url
from .downloads import ByteBudget, Deadline, NoRoom, deadline, watched_session
from .media_settings import MB, MediaSettings, bracket
from .redaction import redact_library_logs
from .tokens import LabelStudioAuth

log = logging.getLogger(__name__)

CLOUD_SCHEMES = frozenset({"s3", "gs", "azure-blob", "azure-spi"})
MAX_REDIRECTS = 5
LOCAL_FILES_PATH = "/data/local-files"
_HTTP_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_DECODINGS = 8  # a path still percent-encoded after this many decodings is treated as local files (fails closed)
_CHUNK = 1 << 16

__all__ = ["MediaError", "MediaFetcher", "MediaSettings", "redact_url"]  # MediaError: callers catch it from here


def _host(url: str) -> str:
    origin = _origin(url)
    return origin.display if origin is not None else redact_url(url)


def _normalized_path(path: str) -> str:
    """A URL path with backslashes as slashes, empty and ``.`` segments dropped, ``..`` resolved, in lowercase."""
    segments: list[str] = []
    for segment in path.replace("\\", "/").lower().split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


# --- fetching -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str  # lowercase, IPv6 in brackets
    port: int

    @property
    def display(self) -> str:
        return self.host if self.port == _DEFAULT_PORTS.get(self.scheme) else f"{self.host}:{self.port}"


def _origin(url: str) -> _Origin | None:
    """Scheme, host and effective port of an http(s) URL; None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _HTTP_SCHEMES or not parts.hostname:
        return None
    return _Origin(scheme, bracket(parts.hostname.rstrip(".")), port or _DEFAULT_PORTS[scheme])


class MediaFetcher:
    """Turns task image references into bytes under the policy in this module's docstring; thread-safe."""

    def __init__(
        self, settings: MediaSettings, session: requests.Session | None = None, *, budget: ByteBudget | None = None
    ) -> None:
        """``session``: mounted with deadline-aware adapters. ``budget``: shared with other fetchers, else one of
        ``settings.budget_bytes`` for this fetcher (the backend makes one fetcher per process)."""
        self.settings = settings
        self._session = watched_session(session)
        self.budget = budget if budget is not None else ByteBudget(settings.budget_bytes)
        redact_library_logs()
        base = settings.label_studio_url
        self._ls = _origin(base) if base else None
        self._ls_prefix = urlsplit(base).path.rstrip("/") if base else ""
        self._auth = (
            LabelStudioAuth(
                base,
                settings.api_key.get_secret_value() if settings.api_key else None,
                self._session,
                settings.timeout_s,
                settings.verify_ssl,
            )
            if base
            else None
        )

    def __repr__(self) -> str:
        return f"MediaFetcher({self.settings.label_studio_url!r}, {self._auth!r})"

    # -- entry point --

    def fetch(self, url: str, *, task_id: int | None = None) -> bytes:
        """The bytes behind a task's image reference (``$image``); MediaError says why not and how to fix it."""
        ref = url.strip() if isinstance(url, str) else ""
        if not ref:
            raise MediaError(
                "the task has no image reference",
                url=repr(url),
                fix="check that the task's data has the field named in <Image value=...>",
            )
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in ref):
            raise MediaError("the reference contains control characters", url=ref, fix="fix the task's image URL")
        try:
            parts = urlsplit(ref)
        except ValueError:
            raise MediaError("not a valid URL", url=ref, fix="fix the task's image URL") from None
        scheme = parts.scheme.lower()
        if scheme in CLOUD_SCHEMES:
            return self._fetch_cloud(ref, task_id)
        if ref.startswith("//"):  # scheme-relative: use Label Studio's scheme
            ref = f"{self._ls.scheme if self._ls else 'https'}:{ref}"
            scheme = urlsplit(ref).scheme
        if scheme in _HTTP_SCHEMES:
            origin = self._check_hop(ref, shown=ref, previous=None, presigned=False)
            rel = self._local_rel(ref) if self._is_ls(origin) else None
            if rel is not None and self.settings.local_files_root is not None:
                return self._read_local(ref, rel)
            return self._download(ref, shown=ref)
        if scheme:
            raise MediaError(
                f"the {scheme}: scheme is not supported",
                url=ref,
                fix="reference images as Label Studio paths (/data/...), http(s) URLs, or s3://, gs://, "
                "azure-blob://, azure-spi:// cloud storage URIs",
            )
        if not ref.startswith("/"):
            raise MediaError(
                "neither a URL nor a path on Label Studio",
                url=ref,
                fix="use /data/upload/..., /data/local-files/?d=..., an http(s) URL or a cloud storage URI",
            )
        rel = self._local_rel(ref)
        if rel is not None and self.settings.local_files_root is not None:
            return self._read_local(ref, rel)
        return self._download(self._ls_url(ref), shown=ref)

    # -- Label Studio paths and local files --

    def _ls_url(self, path: str) -> str:
        """Label Studio's URL + a path from a task (the path prefix is not doubled if the path has it)."""
        if self._ls is None or self.settings.label_studio_url is None:
            raise MediaError("this is a path on Label Studio, but LABEL_STUDIO_URL is not set", url=path, fix=URL_FIX)
        base = self.settings.label_studio_url
        prefix = self._ls_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            base = base[: len(base) - len(prefix)]
        return base + path

    def _local_rel(self, url: str) -> str | None:
        """The ``d`` parameter of a local-files URL (decoded once, like Label Studio; '' if missing); else None."""
        parts = urlsplit(url)
        if not self._is_local_files_path(parts.path):
            return None
        values = [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "d"]
        return values[-1] if values else ""

    def _is_local_files_path(self, path: str) -> bool:
        """Whether a URL path names the local-files endpoint, however spelled: the path and each percent-decoding of
        it are normalised (``.``, ``..``, empty segments, backslashes, case) and compared; fails closed."""
        targets = {_normalized_path(LOCAL_FILES_PATH), _normalized_path(self._ls_prefix + LOCAL_FILES_PATH)}
        for _ in range(_MAX_DECODINGS):
            if _normalized_path(path) in targets:
                return True
            decoded = unquote(path)
            if decoded == path:
                return False
            path = decoded
        return True  # still encoded: whatever it names, it gets no token

    def _read_local(self, shown: str, rel: str) -> bytes:
        """``<root>/<rel>`` from disk; the real path (symlinks resolved) must stay inside the root."""
        root = self.settings.local_files_root
        assert root is not None
        try:
            root_real = root.resolve(strict=True)
        except (OSError, RuntimeError):
            raise MediaError(f"LOCAL_FILES_DOCUMENT_ROOT {root} does not exist", url=shown, fix=ROOT_FIX) from None
        if not root_real.is_dir():
            raise MediaError(f"LOCAL_FILES_DOCUMENT_ROOT {root} is not a folder", url=shown, fix=ROOT_FIX)
        if not rel:
            raise MediaError("the local-files URL has no d= path", url=shown, fix="fix the task's image URL")
        escapes = MediaError(
            f"path escapes LOCAL_FILES_DOCUMENT_ROOT ({root})",
            url=shown,
            fix="only files inside that folder are served; fix the task's path",
        )
        if "\x00" in rel:
            raise MediaError("the path contains a NUL byte", url=shown, fix="fix the task's path")
        if PurePosixPath(rel).is_absolute() or rel.startswith("\\"):
            raise escapes
        try:
            real = (root_real / rel).resolve()
        except (OSError, RuntimeError):  # symlink loop
            raise MediaError(f"cannot resolve {rel} under {root}", url=shown, fix="fix the symlinks") from None
        if not real.is_relative_to(root_real):
            raise escapes
        if not real.exists():
            raise MediaError(
                f"file {rel} not found under LOCAL_FILES_DOCUMENT_ROOT {root}",
                url=shown,
                fix="check that the file exists; " + ROOT_FIX,
            )
        if not real.is_file():
            raise MediaError(f"{rel} under {root} is not a file", url=shown, fix="fix the task's path")
        cannot_read = "let this backend's user read the file"
        try:
            with real.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self.settings.max_bytes:
                    raise self._too_big(shown, f"{size} bytes")
                with deadline(self.settings.timeout_s) as limit, self._room(size, limit, shown):
                    data = handle.read(size + 1)
        except OSError as err:
            cause = f"cannot read {rel} under {root} ({type(err).__name__})"
            raise MediaError(cause, url=shown, fix=cannot_read) from None
        if len(data) != size:
            raise MediaError(f"{rel} under {root} changed while it was read", url=shown, fix="retry")
        return data

    # -- cloud storage --

    def _fetch_cloud(self, uri: str, task_id: int | None) -> bytes:
        if task_id is None or isinstance(task_id, bool) or not isinstance(task_id, int):
            raise MediaError(
                "cloud storage URIs are fetched through Label Studio's presign endpoint, which needs the task id",
                url=uri,
                fix="pass task_id (the task's id in Label Studio) along with the URI",
            )
        if self.settings.label_studio_url is None:
            raise MediaError("cloud storage URIs need Label Studio to presign them", url=uri, fix=URL_FIX)
        fileuri = base64.urlsafe_b64encode(uri.encode()).decode("ascii")
        presign = f"{self.settings.label_studio_url}/tasks/{task_id}/presign/?{urlencode({'fileuri': fileuri})}"
        return self._download(presign, shown=uri, presigned=True)

    # -- HTTP --

    def _is_ls(self, origin: _Origin | None) -> bool:
        return origin is not None and origin == self._ls

    def _is_allowed(self, origin: _Origin) -> bool:
        hosts = self.settings.allowed_hosts
        return origin.host in hosts or f"{origin.host}:{origin.port}" in hosts

    def _check_hop(self, url: str, *, shown: str, previous: str | None, presigned: bool) -> _Origin:
        """The hop's origin, if the policy lets us fetch it; else MediaError."""
        came_from = _origin(previous).display if previous and _origin(previous) else None
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _HTTP_SCHEMES:
            what = f"a {scheme}: URL" if scheme else "a URL without a scheme"
            raise MediaError(
                f"redirect from {came_from} to {what} refused" if came_from else f"{what} is not fetched",
                url=shown,
                fix="only http(s) URLs are followed",
            )
        if "@" in parts.netloc or "\\" in parts.netloc:
            raise MediaError(
                "URLs with a user name or password are not supported", url=shown, fix="remove the user info"
            )
        origin = _origin(url)
        if origin is None:
            raise MediaError("the URL has no valid host", url=shown, fix="fix the task's image URL")
        if self._is_ls(origin) or self._is_allowed(origin) or (presigned and previous is not None):
            return origin
        ls = f"{self._ls.display}" if self._ls else "LABEL_STUDIO_URL is not set"
        cause = f"host {origin.display} is not Label Studio's ({ls})"
        if came_from:
            cause = f"redirect from {came_from} to {redact_url(url)} refused: {cause}"
        raise MediaError(cause, url=shown, fix="add it to MINIGPT_ALLOWED_HOSTS if you trust it")

    def _download(self, url: str, *, shown: str, presigned: bool = False) -> bytes:
        """GET under one deadline, redirects followed by hand; one PAT refresh after a 401.

        The token goes only to hops of a chain that started at Label Studio and has not yet left its origin: a
        redirect that crosses origins, in either direction, ends the token's part of the chain for good.
        """
        with deadline(self.settings.timeout_s) as limit:
            current, previous = url, None
            with_token = self._is_ls(_origin(url))
            redirects, refresh, refreshed = 0, False, False
            while True:
                if limit.passed:
                    raise self._timed_out(current, shown=shown)
                origin = self._check_hop(current, shown=shown, previous=previous, presigned=presigned)
                if previous is not None and origin != _origin(previous):
                    with_token = False
                headers: dict[str, str | None] = {"Authorization": None, "Accept-Encoding": "identity"}
                if with_token and self._auth is not None:  # None above drops any session-level Authorization
                    headers.update(self._token_headers(refresh, limit, current, shown))
                refresh = False
                log.debug("GET %s (auth: %s)", redact_url(current), headers["Authorization"] is not None)
                with self._get(current, headers, to_ls=self._is_ls(origin), shown=shown, limit=limit) as response:
                    status = response.status_code
                    location = response.headers.get("Location") if status in _REDIRECT_STATUSES else None
                    if location and with_token and self._is_login_page(urljoin(current, location)):
                        status, location = 401, None  # Label Studio sends unauthenticated browsers to its login page
                    if location:
                        redirects += 1
                        if redirects > MAX_REDIRECTS:
                            fix = "check the URL for a redirect loop"
                            raise MediaError(f"more than {MAX_REDIRECTS} redirects", url=shown, fix=fix)
                        previous, current = current, urljoin(current, location)
                        continue
                    pat = self._auth is not None and self._auth.is_personal_access_token
                    if status == 401 and with_token and pat and not refreshed:
                        refresh = refreshed = True
                        continue
                    if status != 200:
                        hop = current if previous is not None else None
                        raise self._status_error(status, current, hop, shown=shown, with_token=with_token)
                    return self._read_body(response, current, shown, limit)

    def _token_headers(self, refresh: bool, limit: Deadline, url: str, shown: str) -> dict[str, str]:
        assert self._auth is not None
        try:
            return self._auth.headers(refresh=refresh)
        except MediaError:
            if limit.passed:  # the deadline cut the token exchange off
                raise self._timed_out(url, shown=shown) from None
            raise

    def _is_login_page(self, url: str) -> bool:
        return self._is_ls(_origin(url)) and urlsplit(url).path.startswith(self._ls_prefix + "/user/login")

    def _get(
        self, url: str, headers: dict[str, str | None], *, to_ls: bool, shown: str, limit: Deadline
    ) -> requests.Response:
        try:
            return self._session.get(
                url,
                headers=headers,
                timeout=max(limit.remaining(), 0.001),  # connect, then each read; the deadline bounds the sum
                verify=self.settings.verify_ssl,
                allow_redirects=False,
                stream=True,
            )
        except requests.exceptions.SSLError:
            if limit.passed:
                raise self._timed_out(url, shown=shown) from None
            raise MediaError(
                f"the TLS certificate of {_host(url)} was not accepted",
                url=shown,
                fix="install its certificate authority, or set VERIFY_SSL=false if you trust this server",
            ) from None
        except (requests.ConnectionError, requests.Timeout) as err:
            if limit.passed or isinstance(err, requests.Timeout):
                how = f"no answer within {limit.seconds:g} s, the MINIGPT_FETCH_TIMEOUT for the whole download"
            else:
                how = type(err).__name__
            if to_ls:
                fix = REACH_FIX.replace("LABEL_STUDIO_URL", f"LABEL_STUDIO_URL={self.settings.label_studio_url}", 1)
            else:
                fix = "check that this backend can reach that host, or raise MINIGPT_FETCH_TIMEOUT"
            raise MediaError(f"cannot reach {_host(url)} ({how})", url=shown, fix=fix) from None
        except requests.RequestException as err:
            raise MediaError(
                f"the request failed ({type(err).__name__})", url=shown, fix="fix the task's image URL"
            ) from None

    def _status_error(self, status: int, url: str, hop: str | None, *, shown: str, with_token: bool) -> MediaError:
        """``hop``: the URL that answered, when a redirect led there. The server's own reason phrase is not repeated
        (it is the server's text, not ours); the standard phrase for the code is."""
        where = f" for {redact_url(hop)}" if hop else ""
        if status == 401 and with_token:
            if self._auth is None or not self._auth.has_key:
                return MediaError(
                    f"Label Studio asks for a token (HTTP 401{where}) and LABEL_STUDIO_API_KEY is not set",
                    url=shown,
                    fix=TOKEN_FIX,
                )
            if self._auth.is_personal_access_token:
                return MediaError(
                    f"Label Studio refused the token (HTTP 401{where}), even after a fresh access token",
                    url=shown,
                    fix=f"check that the token's user may see this project, or {PAT_FIX}",
                )
            return MediaError(f"Label Studio refused the token (HTTP 401{where})", url=shown, fix=TOKEN_FIX)
        try:
            phrase = f" {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        text = f"HTTP {status}{phrase}{where}"
        if status == 401 and hop is not None and self._is_ls(_origin(url)):
            return MediaError(
                f"Label Studio answered {text}: the token is not sent after a redirect from another origin",
                url=shown,
                fix="reference the image by its Label Studio path or URL, not through a host that redirects there",
            )
        if status == 403 and with_token:
            return MediaError(
                f"Label Studio answered {text}",
                url=shown,
                fix="give the token's user access to this project in Label Studio",
            )
        if status == 404:
            fix = "check the task's image reference; the file may have been deleted"
            if self._local_rel(url) is not None:
                fix = (
                    "start Label Studio with LOCAL_FILES_SERVING_ENABLED=true, or set LOCAL_FILES_DOCUMENT_ROOT "
                    "here to read local files from disk"
                )
            return MediaError(f"not found ({text})", url=shown, fix=fix)
        return MediaError(
            f"the server answered {text}",
            url=shown,
            fix="check the URL and the server; retry later if it is a 5xx error",
        )

    def _too_big(self, shown: str, size: str) -> MediaError:
        return MediaError(
            f"the image is too large ({size}; the limit is {self.settings.max_bytes} bytes)",
            url=shown,
            fix="use a smaller image, or raise MINIGPT_FETCH_MAX_MB",
        )

    def _timed_out(self, url: str, *, shown: str) -> MediaError:
        return MediaError(
            f"the download from {_host(url)} did not finish within {self.settings.timeout_s:g} s "
            "(MINIGPT_FETCH_TIMEOUT is the total for one download, redirects included)",
            url=shown,
            fix="check that the host answers promptly, or raise MINIGPT_FETCH_TIMEOUT for large images on slow links",
        )

    @contextmanager
    def _room(self, nbytes: int, limit: Deadline, shown: str) -> Iterator[None]:
        """The budget's reservation of ``nbytes`` for the block, or a MediaError saying it did not come in time."""
        try:
            with self.budget.hold(nbytes, limit):
                yield
        except NoRoom:  # raised only while waiting to enter
            raise MediaError(
                f"no room to download it within {self.settings.timeout_s:g} s: other downloads hold all of this "
                f"process's MINIGPT_FETCH_BUDGET_MB ({self.budget.capacity / MB:g} MB)",
                url=shown,
                fix="retry later, or raise MINIGPT_FETCH_BUDGET_MB if the machine has the memory",
            ) from None

    def _read_body(self, response: requests.Response, url: str, shown: str, limit: Deadline) -> bytes:
        """The body, held inside the byte budget: the stated length is reserved, or the per-image cap if unknown."""
        cap = self.settings.max_bytes
        length = (response.headers.get("Content-Length") or "").strip()
        stated = int(length) if length.isdigit() else None
        if stated is not None and stated > cap:
            raise self._too_big(shown, f"{stated} bytes")
        if (response.headers.get("Content-Type") or "").lower().startswith("text/html"):
            raise MediaError(
                "got an HTML page instead of an image",
                url=shown,
                fix="the reference points at a web page, or a login page answered: check LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY",
            )
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        reserve = stated if stated is not None and encoding == "identity" else cap  # decoded size: unknown
        with self._room(reserve, limit, shown):
            buffer = io.BytesIO()  # getvalue() hands its buffer over: no second copy of the image
            try:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if buffer.tell() + len(chunk) > reserve:
                        raise self._too_big(shown, f"more than {reserve} bytes")
                    buffer.write(chunk)
            except (requests.RequestException, OSError) as err:
                if limit.passed:
                    raise self._timed_out(url, shown=shown) from None
                raise MediaError(
                    f"the download broke off ({type(err).__name__})", url=shown, fix="retry; check the network"
                ) from None
            if limit.fired:  # a cut-off body without a stated length ends like a complete one
                raise self._timed_out(url, shown=shown)
            return buffer.getvalue()
