"""What a model run returns, and how it is asked to generate: plain pydantic, no torch.

Kept apart from :mod:`model.proposer` so that clients that only send requests and read results (the desktop
app's remote engine, the backend's JSON) start without importing torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .annotations import Proposal, Task
from .grammar import Skipped

MAX_SEED = 2**32 - 1  # what every random generator here takes (torch, numpy, random); 2**70 overflowed torch's
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="random seed, 0 to 2**32 - 1")]

# Sampling divides the model's float32 logits by the temperature and (for the tokens already generated) by the
# repetition penalty. At 1e-300 the logits became infinite; at 1e300 the divisor itself did (beyond float32), and a
# masked -inf logit divided by it is NaN: sampling failed either way. Between 0.01 and 100 every logit stays finite
# and keeps its sign; outside, sampling is greedy decoding (do_sample=False) or uniform noise in all but name.
SAMPLING_DIVISOR = {"ge": 0.01, "le": 100.0}


class GenerationOptions(BaseModel):
    """Greedy by default, like the official benchmark eval. The official demo samples with
    temperature 0.6, top_p 0.9 and repetition_penalty 1.05 (`GenerationOptions.demo()`).

    Every value that reaches the model is checked here, so a request cannot make generation fail: numbers are
    finite (JSON's Infinity/NaN are refused), seeds fit the generators, temperature and repetition penalty lie in
    0.01-100.
    """

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    max_new_tokens: int | None = Field(default=None, ge=1, description="None: a per-task default")
    min_new_tokens: int | None = Field(default=None, ge=1, description="force at least this many (benchmarks)")
    cache: Literal["auto", "dynamic", "static", "compiled"] = Field(
        default="auto",
        description="KV cache: dynamic (grows per token), static (preallocated), compiled (static + torch.compile, "
        "warmed up once per process and batch size); auto is compiled on a GPU, dynamic on the CPU",
    )
    do_sample: bool = False
    temperature: float = Field(default=1.0, **SAMPLING_DIVISOR)
    top_p: float = Field(default=1.0, gt=0, le=1)
    repetition_penalty: float = Field(default=1.0, **SAMPLING_DIVISOR)
    seed: Seed | None = None

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
    calibrated: bool = Field(default=False, description="the scores went through the model's calibration.json")

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
