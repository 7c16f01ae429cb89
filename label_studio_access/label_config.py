"""What a Label Studio project's labeling config asks of us, read with the SDK's `LabelInterface`.

We need one `RectangleLabels` control bound to an `Image` object (where boxes go and under which labels), the task
data key that holds the image reference, and optionally a `TextArea` on the same image for typed prompts.

Each `<Label>` is prompted as `[detection] <prompt>`, where the prompt is, in order of preference:
- the label's `prompt` attribute: `<Label value="Car" prompt="car or van"/>`;
- the first item of the label's `predicted_values` attribute (the label-studio-ml convention for model class names);
- the label's visible `value`;
asked in words (`fire_hydrant` → `fire hydrant`): the desktop app's and autolabel's rule too,
:func:`model.labels.label_spec`.
Which label a typed prompt or a model answer names is :class:`model.labels.LabelMatcher`'s rule, over every text
above (value, alias, prompt, predicted values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from label_studio_sdk.label_interface import LabelInterface

from model.errors import MiniGPTError
from model.labels import LabelMatcher, LabelSpec, label_spec


class LabelConfigError(MiniGPTError):
    """The project's labeling config cannot be served by this backend."""


@dataclass(frozen=True)
class ProjectLabels:
    from_name: str  # the RectangleLabels control's name
    to_name: str  # the Image object's name
    value_key: str  # task["data"][value_key] holds the image reference
    labels: tuple[LabelSpec, ...]
    prompt_name: str | None  # a TextArea on the same image, for typed prompts
    interface: LabelInterface
    matcher: LabelMatcher[LabelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", LabelMatcher((spec, spec.names) for spec in self.labels))

    @classmethod
    def parse(cls, label_config: str) -> ProjectLabels:
        """Parse (cached per config text). Raises `LabelConfigError` naming what is missing and the fix."""
        return _parse(label_config)

    def find(self, text: str) -> LabelSpec | None:
        """The label a piece of text names as whole words, the longest name winning ("traffic light" beats
        "light"), in any case, separator or number (see model.labels)."""
        return self.matcher.find(text)

    def find_exact(self, text: str) -> LabelSpec | None:
        """The label the whole text is a name of (any case, separator or number)."""
        return self.matcher.exact(text)

    def validation_errors(self, prediction: dict) -> list[str]:
        """The SDK's verdict on one prediction (`{"result": [...], "score": ...}`); empty when it is valid."""
        errors = self.interface.validate_prediction(prediction, return_errors=True)
        return [] if errors is True else list(errors or [])


# A parsed config costs several times its text (2 MB of text: about 3 MB more; 5,000 labels: 11 MB), so few are kept.
@lru_cache(maxsize=16)
def _parse(label_config: str) -> ProjectLabels:
    if not label_config or not label_config.strip():
        raise LabelConfigError("the project has no labeling config; add one in Settings > Labeling Interface")
    try:
        interface = LabelInterface(label_config)
    except Exception as err:  # the SDK raises plain exceptions for malformed XML
        cause = " ".join(str(err).split())
        raise LabelConfigError(f"cannot parse the labeling config ({cause}); fix the XML") from err

    rectangles = [c for c in interface.controls if c.tag.lower() == "rectanglelabels"]
    for control in rectangles:
        images = [interface.get_object(name) for name in control.to_name]
        image = next((o for o in images if o.tag.lower() == "image"), None)
        if image is None:
            continue
        labels = tuple(
            label_spec(value, getattr(tag, "attr", None)) for value, tag in (control.labels_attrs or {}).items()
        )
        if not labels:
            raise LabelConfigError(
                f"RectangleLabels '{control.name}' has no <Label> children; add the labels the model should find"
            )
        prompt = next(
            (c.name for c in interface.controls if c.tag.lower() == "textarea" and image.name in c.to_name), None
        )
        return ProjectLabels(
            from_name=control.name,
            to_name=image.name,
            value_key=image.value.lstrip("$"),
            labels=labels,
            prompt_name=prompt,
            interface=interface,
        )
    raise LabelConfigError(
        "the labeling config has no RectangleLabels control bound to an Image; minigpt-annotate proposes boxes, so add "
        'e.g. <Image name="image" value="$image"/> and <RectangleLabels name="label" toName="image"> with <Label>s'
    )
