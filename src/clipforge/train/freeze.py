"""Which parts of a model learn: locking towers for LiT-style training.

Locking is a method of the model (`ContrastiveModel.lock_image_tower` / `lock_text_tower`), because only
the model knows its blocks; this module maps a run's `model` section onto those calls.
"""

from __future__ import annotations

from clipforge.models.base import ContrastiveModel
from clipforge.train.config import ModelSection


def apply_locks(model: ContrastiveModel, section: ModelSection) -> None:
    """Freezes what `section` locks: the image tower and/or the text backbone, but their unlocked blocks.

    Raises:
        ConfigError: the model cannot lock what the section asks (e.g. a CLIP text tower).
    """
    if section.lock_image:
        model.lock_image_tower(section.unlocked_image_blocks)
    if section.lock_text:
        model.lock_text_tower(section.unlocked_text_blocks)
