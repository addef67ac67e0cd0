"""DALL-E-style text-to-image pieces: skill-scene batches, image-token caching and sampling (the two
stages' losses and training tasks live in `train.dalle_objectives` and `train.dalle_tasks`)."""
