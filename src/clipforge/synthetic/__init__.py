"""Exact-truth synthetic scenes: sampling (`scene`), drawing (`render`), captions and probes (`text`),
datasets and on-disk sets (`dataset`), and the zero-shot attribute reading of single-object scenes
(`zeroshot`)."""
