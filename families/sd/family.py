"""The Stable Diffusion family as a :class:`families.base.Family` (SD 1.x, 2.x, SDXL)."""

from __future__ import annotations

from families.base import Checkpoint, LoadOptions, Source
from families.sd.components import VARIANTS


class SDFamily:
    name = "sd"
    variants: tuple[str, ...] = VARIANTS

    def detect(self, source: Source) -> str | None:
        from families.sd.detect import detect_variant

        return detect_variant(source)

    def load(self, source: Source, variant: str, options: LoadOptions) -> Checkpoint:
        from families.sd.files import load_components
        from families.sd.model import checkpoint_from_components

        components = load_components(source, variant, options, prediction=options.prediction)
        return checkpoint_from_components(components, options)


FAMILY = SDFamily()
