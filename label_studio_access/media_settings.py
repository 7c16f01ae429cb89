"""Where images come from and what this backend may fetch: :class:`MediaSettings`, read from the environment.

Label Studio's own ML backends read ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY`` and ``LOCAL_FILES_DOCUMENT_ROOT``;
ours add ``MINIGPT_ALLOWED_HOSTS`` and the download limits: ``MINIGPT_FETCH_TIMEOUT`` (seconds, the total for one
download, redirects included), ``MINIGPT_FETCH_MAX_MB`` (the largest image) and ``MINIGPT_FETCH_BUDGET_MB`` (what all
of a process's downloads may hold at once). Errors name the variable, never echo a secret.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator

from .access_errors import MediaError

MB = 2**20
_HTTP_SCHEMES = ("http", "https")


def bracket(host: str) -> str:
    """An IPv6 host in brackets, as in a URL's netloc."""
    return f"[{host}]" if ":" in host else host


def _normalize_host(entry: str) -> str | None:
    """``Host``, ``host:port`` or ``http(s)://host[:port][/]`` → ``host`` / ``host:port`` (lowercase); '' → None."""
    text = entry.strip().lower()
    if not text:
        return None
    problem = f"MINIGPT_ALLOWED_HOSTS entry {entry.strip()!r} is not a host or host:port (e.g. cdn.example.com or "
    problem += "127.0.0.1:9000)"
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in _HTTP_SCHEMES or parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError(problem)
        text = parts.netloc
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if "@" in text or "\\" in text or parts.path or parts.query or not parts.hostname:
        raise ValueError(problem)
    host = bracket(parts.hostname.rstrip("."))
    return f"{host}:{port}" if port is not None else host


class MediaSettings(BaseModel, frozen=True):
    """Where images come from and what this backend may fetch."""

    label_studio_url: str | None = None
    api_key: SecretStr | None = None
    local_files_root: Path | None = None
    allowed_hosts: frozenset[str] = frozenset()
    timeout_s: float = Field(default=30.0, gt=0)  # the total for one download: every hop, the body, waiting for room
    # A 250-megapixel JPEG (the pixel limit) is tens of MB; 64 MB admits any photo, and 4 of them fill the budget.
    max_bytes: int = Field(default=64 * MB, gt=0)
    budget_bytes: int = Field(default=256 * MB, gt=0)
    verify_ssl: bool = True

    @field_validator("label_studio_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        example = "e.g. http://localhost:8080, or from inside Docker http://host.docker.internal:8080"
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"LABEL_STUDIO_URL must start with http:// or https://, {example} (got {value!r})")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  # raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"LABEL_STUDIO_URL {value!r} is not a valid URL; {example}") from None
        if not parts.hostname or "@" in parts.netloc or "\\" in parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"LABEL_STUDIO_URL must be only scheme, host, port and optional path prefix, {example} (got {value!r})"
            )
        return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("api_key")
    @classmethod
    def _empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("local_files_root")
    @classmethod
    def _expand_root(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple, set, frozenset)):
            return value  # pydantic reports the type error
        hosts = set()
        for entry in value:
            if not isinstance(entry, str):
                raise ValueError("MINIGPT_ALLOWED_HOSTS entries must be strings")
            if (host := _normalize_host(entry)) is not None:
                hosts.add(host)
        return frozenset(hosts)

    @model_validator(mode="after")
    def _budget_holds_an_image(self) -> MediaSettings:
        if self.budget_bytes < self.max_bytes:
            raise ValueError(
                f"MINIGPT_FETCH_BUDGET_MB ({self.budget_bytes / MB:g}) is below MINIGPT_FETCH_MAX_MB "
                f"({self.max_bytes / MB:g}), so the largest image could never download; raise the budget"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MediaSettings:
        """Read the settings Label Studio's own ML backends use, plus ours (MINIGPT_*)."""

        def first(*names: str) -> str | None:
            for name in names:
                value = env.get(name)
                if value is not None and value.strip():
                    return value.strip()
            return None

        values: dict[str, object] = {
            "label_studio_url": first("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
            "api_key": first("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
            "local_files_root": first("LOCAL_FILES_DOCUMENT_ROOT"),
        }
        if (hosts := first("MINIGPT_ALLOWED_HOSTS")) is not None:
            values["allowed_hosts"] = hosts
        if (timeout := first("MINIGPT_FETCH_TIMEOUT")) is not None:
            values["timeout_s"] = timeout
        for field, name in (("max_bytes", "MINIGPT_FETCH_MAX_MB"), ("budget_bytes", "MINIGPT_FETCH_BUDGET_MB")):
            if (megabytes := first(name)) is not None:
                values[field] = _bytes_from_mb(name, megabytes)
        if (verify := first("VERIFY_SSL")) is not None:
            if verify.lower() not in _TRUE | _FALSE:
                raise MediaError(f"VERIFY_SSL must be true or false (got {verify!r})")
            values["verify_ssl"] = verify.lower() in _TRUE
        try:
            return cls(**values)
        except ValidationError as err:
            raise MediaError(_describe(err)) from None


def _bytes_from_mb(name: str, text: str) -> int:
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise MediaError(f"{name} must be a positive number of megabytes (2^20 bytes), e.g. 64 (got {text!r})")
    return max(1, int(megabytes * MB))


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ENV_NAMES = {
    "label_studio_url": "LABEL_STUDIO_URL",
    "api_key": "LABEL_STUDIO_API_KEY",
    "local_files_root": "LOCAL_FILES_DOCUMENT_ROOT",
    "allowed_hosts": "MINIGPT_ALLOWED_HOSTS",
    "timeout_s": "MINIGPT_FETCH_TIMEOUT",
    "max_bytes": "MINIGPT_FETCH_MAX_MB",
    "budget_bytes": "MINIGPT_FETCH_BUDGET_MB",
}


def _describe(err: ValidationError) -> str:
    """One line per problem, named by environment variable, without echoing any input value."""
    problems = []
    for item in err.errors(include_input=False, include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        name = _ENV_NAMES.get(str(item["loc"][0]) if item["loc"] else "", "")
        problems.append(message if not name or name in message else f"{name}: {message}")
    return "; ".join(problems)
