"""DALL-E-style text-to-image pieces: training objectives for the dVAE and the transformer, skill-scene
batches, image-token caching and sampling."""
