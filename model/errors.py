"""Error types that carry a user-facing message naming the cause and the fix."""


class MiniGPTError(Exception):
    """Base class for every error this project raises on purpose.

    The CLI prints ``str(error)`` as a one-line cause, without a traceback.
    """


class ImageLoadError(MiniGPTError, ValueError):
    """An image could not be decoded into upright RGB."""


class CheckpointError(MiniGPTError):
    """A checkpoint file is missing, malformed, or does not match the architecture."""


class PromptError(MiniGPTError, ValueError):
    """A task/query combination cannot be turned into a prompt."""


class GenerationStopped(MiniGPTError):
    """Generation was stopped on request (``should_stop``) before it finished; nothing was returned."""
