"""What a model run returns, and how it is asked to generate: plain pydantic, no torch.

Kept apart from :mod:`model.proposer` so that clients that only send requests and read results (the desktop
app's remote engine, the backend's JSON) start without importing torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .annotations import Proposal, Task
from .grammar import Skipped


class GenerationOptions(BaseModel):
    """Greedy by default, like the official benchmark eval. The official demo samples with
    temperature 0.6, top_p 0.9 and repetition_penalty 1.05 (`GenerationOptions.demo()`)."""

    model_config = ConfigDict(frozen=True)

    max_new_tokens: int | None = Field(default=None, ge=1, description="None: a per-task default")
    min_new_tokens: int | None = Field(default=None, ge=1, description="force at least this many (benchmarks)")
    cache: Literal["auto", "dynamic", "static", "compiled"] = Field(
        default="auto",
        description="KV cache: dynamic (grows per token), static (preallocated), compiled (static + torch.compile, "
        "warmed up once per process and batch size); auto is compiled on a GPU, dynamic on the CPU",
    )
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0)
    seed: int | None = None

    @classmethod
    def demo(cls, **overrides: object) -> GenerationOptions:
        demo = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.05}
        return cls.model_validate(demo | overrides)


class ProposalResult(BaseModel):
    """Everything one request produced. `text` is the model's answer; `proposals` its boxes in pixels."""

    image: str
    width: int
    height: int
    task: Task
    query: str | None
    prompt: str
    text: str
    proposals: list[Proposal]
    skipped: list[Skipped] = Field(default_factory=list)

    def to_json_dict(self) -> dict:
        """What `propose --json` prints (README, "Command line")."""
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "task": self.task.value,
            "query": self.query,
            "text": self.text,
            "proposals": [proposal_json(p) for p in self.proposals],
        }


def proposal_json(proposal: Proposal) -> dict:
    return {"label": proposal.label, "bbox": list(proposal.box.xyxy), "score": proposal.score}
