"""Image-skill evaluation (DALL-Eval / PaintSkills): skill sets from the synthetic renderer, an exact
scene parser, DALL-Eval's skill rules, image-text alignment and image-quality metrics, and the scoring
job behind ``clipforge skills``."""
