"""The procedural text-to-image world (issue 8): scene grammar, gold judge, simulated annotators, base models.

Ground truth is known here, so alignment claims are proven against a gold judge. Submodules:
`scenes` (grammar, rendering, prompts), `judge` (gold judge on pixels), `annotators` (simulated votes),
`reward` (reward model from votes, eval vs gold), `loop` (the whole chain). Heavy submodules are imported
on use, not here.
"""
from imgpref.world.scenes import (
    COLOURS,
    SHAPES,
    Obj,
    PromptSpec,
    Scene,
    caption,
    parse_prompt,
    render,
    render_prompt,
    sample_dataset,
    sample_prompts,
    sample_scene,
    split_combos,
)

__all__ = [
    "COLOURS", "SHAPES", "Obj", "PromptSpec", "Scene", "caption", "parse_prompt", "render", "render_prompt",
    "sample_dataset", "sample_prompts", "sample_scene", "split_combos",
]
