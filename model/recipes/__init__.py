"""Recipe files shipped with the package: the official MiniGPT-v2 stages, the shipped shapes model's recipe, and the
default correction-tuning recipe.

See docs/recipes.md for the format and :mod:`model.training.recipe` for its definition.
"""

from pathlib import Path

RECIPES_DIR = Path(__file__).parent
OFFICIAL = ("minigptv2-stage1.yaml", "minigptv2-stage2.yaml", "minigptv2-stage3.yaml")
SHAPES = "tiny-shapes.yaml"
CORRECTIONS = "corrections.yaml"  # the default correction-tuning recipe: corrections + self-distilled replay


def recipe_path(name: str) -> Path:
    """The path of a shipped recipe file, e.g. ``recipe_path("tiny-shapes.yaml")``."""
    return RECIPES_DIR / name
