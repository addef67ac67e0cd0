"""The transformer's training pairs, encoded once by the dVAE and cached on disk.

A cache file is named by a hash of everything its content depends on — the dVAE's weights, the scene
config, seed and count (or the photos' pixels and captions), and the text context — so a retrained dVAE
or other data can never be served stale tokens. Files are written atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as dump_tensors

from clipforge.dalle.batches import TokenPairs, encode_scenes
from clipforge.dalle.photos import CaptionedPhotos, encode_photos
from clipforge.dalle.scenes import SkillSceneConfig, skill_scene
from clipforge.fileio import write_bytes_atomic
from clipforge.models.dvae import DVAE
from clipforge.progress import Say, quiet
from clipforge.tokenizer import TextTokenizer


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def pairs_key(dvae: DVAE, config: SkillSceneConfig, seed: int, n: int, context_length: int) -> str:
    """The cache key of `n` scenes of the stream `(config, seed)` encoded by `dvae`."""
    data = f"{config!r}|seed={seed}|n={n}|context={context_length}"
    return hashlib.sha256(f"{weights_fingerprint(dvae)}|{data}".encode()).hexdigest()[:24]


def scene_pairs(dvae: DVAE, tokenizer: TextTokenizer, config: SkillSceneConfig, seed: int, n: int,
                cache_dir: Path | None = None, say: Say = quiet) -> TokenPairs:
    """Scenes 0 .. n-1 of the stream `(config, seed)` as (caption, image tokens), from the cache if there.

    A cache file that cannot be read is recomputed and replaced.
    """
    key = pairs_key(dvae, config, seed, n, tokenizer.context_length)
    return cached_pairs(key, cache_dir, lambda: encode_scenes(
        dvae, tokenizer, [skill_scene(config, seed, i) for i in range(n)]), n, say)


def photo_pairs(dvae: DVAE, tokenizer: TextTokenizer, photos: CaptionedPhotos,
                cache_dir: Path | None = None, say: Say = quiet) -> TokenPairs:
    """Every (caption, image tokens) pair of `photos`, from the cache if there (keyed by the dVAE's weights,
    the pixels and captions, and the text context)."""
    data = f"{photos.fingerprint()}|context={tokenizer.context_length}"
    key = hashlib.sha256(f"{weights_fingerprint(dvae)}|{data}".encode()).hexdigest()[:24]
    return cached_pairs(key, cache_dir, lambda: encode_photos(dvae, tokenizer, photos), len(photos), say)


def cached_pairs(key: str, cache_dir: Path | None, compute: Callable[[], TokenPairs], n: int,
                 say: Say = quiet) -> TokenPairs:
    """The pairs cached under `key`, else `compute()`'s, written (atomically) to the cache if there is one.

    `say` hears which of the two happened to the `n` training images (tokenizing them takes minutes).
    """
    path = None if cache_dir is None else cache_dir / f"pairs-{key}.safetensors"
    if path is not None:
        cached = _read(path)
        if cached is not None:
            say(f"read the image tokens of {n} training images from the cache ({path.name})")
            return cached
    say(f"tokenizing {n} training images with the dVAE")
    pairs = compute()
    if path is not None:
        write_bytes_atomic(path, dump_tensors({"text": pairs.text, "image": pairs.image}))
    return pairs


def _read(path: Path) -> TokenPairs | None:
    if not path.is_file():
        return None
    try:
        tensors = load_tensors(path.read_bytes())
        return TokenPairs(tensors["text"], tensors["image"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
