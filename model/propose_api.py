"""The `POST /propose` contract, defined once: the desktop app's remote engine builds its request and reads the answer
with these models, and `minigpt-annotate serve` (:mod:`ml_backend.server`) validates with them and answers with them.

The two surfaces may not import each other, so the contract lives in the core. Torch-free (pydantic only), so a
remote-only desktop app never loads the model.

Request body, JSON, at most :data:`MAX_BODY_BYTES` (else 413); unknown fields are refused (:class:`ProposeBody`)::

    {"image": "<base64 of the encoded image file: JPEG, PNG, ...; a data: URL prefix is accepted>",
     "prompts": [{"task": "detection", "query": "circle", "box": null}, ...],   # 1 to MAX_PROMPTS prompts
     "options": {"max_new_tokens": 40, ...}}                                      # optional GenerationOptions fields

Each prompt is a :class:`model.request.Prompt`: ``box`` is ``[x0, y0, x1, y1]`` in pixels of the upright image (EXIF
orientation applied), ``[identify]`` only. Answer, 200 (:class:`ProposeAnswer`)::

    {"model_version": "...", "results": [ProposalResult, ...]}   # one per prompt, in order

``image`` of each result is "<bytes>"; ``width``/``height`` and every box are those of the image as sent.
Errors answer ``{"error": "<cause>"}``: 400 for a malformed body or a prompt its task does not take (a box on
``[detection]``), 413 for a body over the limit, 422 for an image that cannot be decoded, 401 without the server's
basic auth. 400, 413 and 422 are about this image or its prompts; any other error is about the server.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from .request import Prompt
from .results import GenerationOptions, ProposalResult

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROMPTS",
    "MAX_UPLOAD_SIDE",
    "PATH",
    "ProposeAnswer",
    "ProposeBody",
    "ProposeOptions",
]

PATH = "/propose"
MAX_PROMPTS = 64  # per call: one batch's worth of work per request keeps the server's model lock fair
MAX_BODY_BYTES = 64 * 1024 * 1024  # a base64 photo of 40+ MB; clients send images of at most MAX_UPLOAD_SIDE
MAX_UPLOAD_SIDE = 1344  # px, long side of what a client uploads: 3x the 448 px the model sees


class _Strict(BaseModel):
    # Client and server may run different versions: a field the server does not know (a typo, or a newer client's
    # feature) is refused with its name instead of being silently ignored.
    model_config = ConfigDict(extra="forbid")


class ProposeOptions(GenerationOptions):
    """:class:`~model.results.GenerationOptions` as the request carries them: unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("cache")
    @classmethod
    def _server_chooses_its_cache(cls, value: str) -> str:
        # The KV cache is the server's business: "compiled" made a CPU server torch.compile for 5-48 s while it
        # held the model lock, so every client waited. The server runs its own "auto" (compiled only on a GPU,
        # warmed up when it starts).
        if value != "auto":
            raise ValueError(f"cache {value!r} is chosen by the server, not the request; leave options.cache at auto")
        return value

    @classmethod
    def of(cls, options: GenerationOptions) -> ProposeOptions:
        return cls.model_validate(options.model_dump())


class ProposeBody(_Strict):
    """The request. ``image`` holds the encoded file's bytes here and base64 text on the wire."""

    image: bytes = Field(min_length=1, repr=False, description="the encoded image file (base64 in JSON)")
    prompts: list[Prompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    options: ProposeOptions | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _from_base64(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # bytes from a client; pydantic reports any other type
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]  # a data: URL, as a browser's FileReader makes it
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"not valid base64 ({err})") from None

    @field_serializer("image", when_used="json")
    def _to_base64(self, image: bytes) -> str:
        return base64.b64encode(image).decode("ascii")

    def to_json(self) -> str:
        """The body as sent: fields left at their defaults are omitted, so a server that predates a new option
        still accepts a request that does not use it."""
        return self.model_dump_json(exclude_defaults=True)


class ProposeAnswer(BaseModel):
    """The answer: one result per prompt, in request order."""

    model_version: str
    results: list[ProposalResult]
