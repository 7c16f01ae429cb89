"""A live Label Studio project through label-studio-sdk: its labeling config, its tasks page by page, and
predictions pushed into it in batches (``autolabel --label-studio URL --project ID``).

Every failure is one line with the cause and the fix: Label Studio not reachable, the token refused, no such
project. Tokens never appear in messages: the SDK's error text (which repeats request headers) is not passed on.
The token may be a Personal Access Token (a JWT the SDK exchanges for access tokens) or a legacy token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.errors import MiniGPTError

from .access_errors import TOKEN_FIX
from .media_settings import MediaSettings

__all__ = ["KEY_ENV", "LabelStudioProject", "ProjectError", "ProjectTask"]

KEY_ENV = ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN")  # the backend's names for the token, in order
REACH_FIX = "check that Label Studio is running at that address (with http:// or https://) and reachable from here"
PAGE_SIZE = 500  # tasks per listing request: large enough for few round trips, small enough for LS's response time


class ProjectError(MiniGPTError):
    """The Label Studio project cannot be read or written."""


@dataclass(frozen=True)
class ProjectTask:
    """One task: its id, its data, and the predictions it holds (id, model version)."""

    id: int
    data: dict[str, Any]
    predictions: tuple[tuple[int, str | None], ...] = ()

    def predictions_of(self, model_version: str) -> list[int]:
        """The ids of this task's predictions made by ``model_version``."""
        return [ident for ident, version in self.predictions if version == model_version]


class LabelStudioProject:
    """Project ``project_id`` of the Label Studio at ``url``, checked on creation (reachable, token, project)."""

    def __init__(
        self,
        url: str,
        project_id: int,
        api_key: str | None,
        *,
        timeout_s: float = 30.0,
        verify_ssl: bool = True,
    ) -> None:
        try:
            import httpx
            from label_studio_sdk import LabelStudio
        except ImportError as err:
            from model.commands import missing_extra

            raise missing_extra("--label-studio", "backend", err) from err
        if not api_key:
            raise ProjectError(f"no Label Studio token; {TOKEN_FIX}")
        self.url = url.rstrip("/")
        self.project_id = project_id
        self._client = LabelStudio(
            base_url=self.url,
            api_key=api_key,
            timeout=timeout_s,
            httpx_client=httpx.Client(timeout=timeout_s, verify=verify_ssl, follow_redirects=False),
        )
        project = self._call("read the project", lambda: self._client.projects.get(id=project_id))
        self.title: str = project.title or f"project {project_id}"
        self.label_config: str = project.label_config or ""

    @classmethod
    def from_env(
        cls, url: str, project_id: int, env: Mapping[str, str] = os.environ
    ) -> tuple[LabelStudioProject, MediaSettings]:
        """The project, with the token from ``LABEL_STUDIO_API_KEY``, and the settings its images are read with:
        the backend's (``MediaSettings.from_env``), with ``url`` as Label Studio's address."""
        settings = MediaSettings.from_env({**env, "LABEL_STUDIO_URL": url})
        assert settings.label_studio_url is not None  # from_env refused a bad URL
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        project = cls(
            settings.label_studio_url, project_id, key, timeout_s=settings.timeout_s, verify_ssl=settings.verify_ssl
        )
        return project, settings

    def tasks(self, page_size: int = PAGE_SIZE) -> Iterator[ProjectTask]:
        """Every task of the project, in Label Studio's order, with the model versions of its predictions."""
        client = self._client.tasks
        seen, number = 0, 1
        while True:  # page by page up to the listed total: LS answers 404 for a page past the end
            page = self._call(
                "list the tasks",
                lambda n=number: client.list(project=self.project_id, fields="all", page=n, page_size=page_size),
            )
            items = list(page.items or ())
            for task in items:
                raw = task.dict() if hasattr(task, "dict") else dict(task)
                predictions = tuple(
                    (int(p["id"]), p.get("model_version"))
                    for p in raw.get("predictions") or ()
                    if isinstance(p, dict) and "id" in p
                )
                yield ProjectTask(int(raw["id"]), dict(raw.get("data") or {}), predictions)
            seen += len(items)
            total = getattr(page.response, "total", None)
            if not items or (total is not None and seen >= total):
                return
            number += 1

    def push(self, predictions: Sequence[Mapping[str, Any]]) -> int:
        """Import ``{"task", "result", "score", "model_version"}`` predictions in one call; returns how many LS made."""
        from label_studio_sdk import PredictionRequest

        if not predictions:
            return 0
        requests = [PredictionRequest(**dict(p)) for p in predictions]
        answer = self._call(
            "import predictions", lambda: self._client.projects.import_predictions(id=self.project_id, request=requests)
        )
        created = getattr(answer, "created", None)
        return int(created) if created is not None else len(requests)

    def delete_predictions(self, ids: Sequence[int]) -> None:
        for ident in ids:
            self._call("delete a prediction", lambda ident=ident: self._client.predictions.delete(id=ident))

    def _call(self, doing: str, call: Any) -> Any:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        where = f"Label Studio at {self.url}"
        try:
            return call()
        except httpx.TimeoutException as err:
            raise ProjectError(
                f"cannot {doing}: {where} did not answer in time ({type(err).__name__}); {REACH_FIX}"
            ) from None
        except httpx.HTTPError as err:  # refused, DNS, TLS, protocol
            cause = " ".join(str(err).split()) or type(err).__name__
            raise ProjectError(f"cannot {doing}: cannot reach {where} ({cause}); {REACH_FIX}") from None
        except ApiError as err:
            status = err.status_code
            if status in (401, 403):
                raise ProjectError(f"cannot {doing}: {where} refused the token (HTTP {status}); {TOKEN_FIX}") from None
            if status == 404:
                raise ProjectError(
                    f"cannot {doing}: {where} has no project {self.project_id} (HTTP 404); pass --project with the "
                    "id in the project's URL (/projects/ID/)"
                ) from None
            raise ProjectError(
                f"cannot {doing}: {where} answered HTTP {status}; check Label Studio's log, then run again"
            ) from None
