"""Text-to-image generation job: draw, re-rank with a CLIP, keep the best, write images and a record."""

from clipforge.generate.job import GenerateConfig, generate

__all__ = ["GenerateConfig", "generate"]
