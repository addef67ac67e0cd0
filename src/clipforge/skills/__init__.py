"""Image-skill evaluation (DALL-Eval / PaintSkills): skill sets from the synthetic renderer (`make`,
`records`), an exact scene parser (`parser`), DALL-Eval's skill rules (`rules`), image-text alignment
(`alignment`) and image-quality metrics (`quality`), and the scoring job behind ``clipforge skills``
(`score`, `report`).

A generator job scores its samples in memory::

    records = load_skill_set(skills_dir, "val")
    truth = read_images(skills_dir, records)
    samples = ImageSet()
    samples.add(skill, record.id, image, name)  # for each sample
    report = evaluate(records, samples, truth, ScoreConfig(), encoder).report
"""

from clipforge.skills.make import SkillSetConfig, make_skill_set
from clipforge.skills.parser import ParserConfig, Reading, parse_image
from clipforge.skills.records import SKILLS, SkillRecord, load_skill_set
from clipforge.skills.rules import Verdict, judge
from clipforge.skills.score import ImageSet, ScoreConfig, evaluate, read_images, score, score_images

__all__ = [
    "SKILLS",
    "ImageSet",
    "ParserConfig",
    "Reading",
    "ScoreConfig",
    "SkillRecord",
    "SkillSetConfig",
    "Verdict",
    "evaluate",
    "judge",
    "load_skill_set",
    "make_skill_set",
    "parse_image",
    "read_images",
    "score",
    "score_images",
]
