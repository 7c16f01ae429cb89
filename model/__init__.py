"""minigpt-annotate core: a faithful MiniGPT-v2 that turns task prompts into pixel boxes.

This package imports neither Qt nor Flask; the desktop app and the Label Studio backend build on it.
"""

__version__ = "0.1.0"
