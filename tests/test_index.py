"""Embedding collections into index folders, incremental updates, exact and FAISS search, the CLIs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import clipforge.index.embed as embed_module
from clipforge import create_model
from clipforge.checkpoint import load, save, weights_fingerprint
from clipforge.cli.main import main
from clipforge.data.transforms import load_image
from clipforge.errors import ConfigError, DataError
from clipforge.index import (
    EmbedConfig,
    EmbeddingStore,
    Searcher,
    ann,
    build_index,
    choose_kind,
    embed_collection,
)
from clipforge.index.ann import (
    EXACT_LIMIT,
    PQ_RERANKS,
    FaissIndex,
    build_auto,
    faiss_threads,
    import_faiss,
    recall_at_k,
    recall_low,
    search_reranked,
)
from clipforge.index.annfile import LEGACY_PQ_RERANK, ids_digest, read_ann

REPO = Path(__file__).resolve().parents[1]
COLORS = [(220, 30, 30), (30, 200, 40), (20, 40, 220), (240, 220, 20), (200, 30, 200), (20, 210, 210)]


def make_model(folder: Path, seed: int = 0) -> Path:
    """A tiny random ViT saved as a model folder (fixed weights, so its hash is stable)."""
    torch.manual_seed(seed)
    return save(create_model("tiny-vit"), folder)


def make_images(root: Path, count: int = 12, bad: bool = True) -> list[Path]:
    """Noisy solid-colour PNGs (some in a subfolder), plus a corrupt and an empty file when `bad`."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = np.array(COLORS[i % len(COLORS)], dtype=np.int16)
        pixels = np.clip(base + rng.integers(-40, 40, (36, 44, 3)), 0, 255).astype(np.uint8)
        path = root / ("nested" if i % 3 == 0 else ".") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path.resolve())
    if bad:
        (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (root / "empty.png").write_bytes(b"")
    return paths


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """(model folder, image folder, image paths)."""
    return make_model(tmp_path / "model"), tmp_path / "images", make_images(tmp_path / "images")


def run_embed(model: Path, images: Path, out: Path, **options: object) -> object:
    config = EmbedConfig(str(model), out, images=images, batch_size=5, workers=0, progress=False, **options)  # type: ignore[arg-type]
    return embed_collection(config)


def test_fingerprint_is_stable_across_save_load_and_sees_one_weight(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    model, _, _ = load(folder)
    again, _, _ = load(folder)
    assert weights_fingerprint(model) == weights_fingerprint(again)
    with torch.no_grad():
        next(again.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(model) != weights_fingerprint(again)
    assert re.fullmatch(r"[0-9a-f]{64}", weights_fingerprint(model))


def test_embed_stores_normalized_float16_vectors_equal_to_the_model(collection, tmp_path: Path) -> None:
    model_dir, images, paths = collection
    report = run_embed(model_dir, images, tmp_path / "idx")
    assert (report.added, report.total, report.index_kind) == (12, 12, "exact")
    assert report.bad.report()["truncated"] == 1 and report.bad.report()["zero_bytes"] == 1

    store = EmbeddingStore(tmp_path / "idx")
    ids, vectors = store.embeddings()
    assert vectors.dtype == np.float16 and vectors.shape == (12, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)

    model, preprocess, _ = load(model_dir)
    by_path = {item.path: item for item in store.items(ids.tolist()).values()}
    with torch.no_grad():
        pixels = torch.stack([preprocess(load_image(p)) for p in paths])  # [12, 3, 32, 32]
        reference = model.encode_image(pixels, normalize=True)
    ours = np.stack([vectors[list(ids).index(by_path[str(p)].id)] for p in paths]).astype(np.float32)
    np.testing.assert_allclose(ours, reference.numpy(), atol=2e-3)
    first = by_path[str(paths[0])]
    assert first.size == paths[0].stat().st_size
    assert first.sha256 == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert store.get_meta("model_hash") == weights_fingerprint(model)


def test_rerun_adds_new_reembeds_changed_and_drops_deleted(collection, tmp_path: Path) -> None:
    model_dir, images, paths = collection
    run_embed(model_dir, images, tmp_path / "idx")
    before = EmbeddingStore(tmp_path / "idx").signatures()
    paths[1].unlink()
    Image.new("RGB", (40, 40), (5, 5, 5)).save(paths[2])
    os.utime(paths[2], ns=(1, 1))  # make sure the mtime differs even on coarse clocks
    Image.new("RGB", (30, 30), (250, 250, 250)).save(images / "new.png")

    report = run_embed(model_dir, images, tmp_path / "idx")
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 10)
    after = EmbeddingStore(tmp_path / "idx").signatures()
    assert str(paths[1]) not in after and len(after) == 12
    assert after[str(paths[2])].id != before[str(paths[2])].id
    assert after[str(paths[3])].id == before[str(paths[3])].id
    again = run_embed(model_dir, images, tmp_path / "idx")
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 12)


def test_rows_commit_with_the_first_batch_then_every_few_seconds(
    collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit waits for the disk, so batches are committed together (and the first one at once)."""
    model_dir, images, _ = collection
    added: list[int] = []
    real_add = EmbeddingStore.add
    monkeypatch.setattr(EmbeddingStore, "add", lambda store, items, vectors: added.append(len(items))
                        or real_add(store, items, vectors))
    run_embed(model_dir, images, tmp_path / "idx")  # 14 files in batches of 5: 12 images, 2 bad
    assert added == [3, 9]  # the first batch holds the two bad files (sorted first) and 3 images
    monkeypatch.setattr(embed_module, "COMMIT_SECONDS", 0.0)
    added.clear()
    run_embed(model_dir, images, tmp_path / "again")
    assert len(added) == 3 and sum(added) == 12  # one commit per batch


def test_another_model_is_refused_for_embedding_and_searching(collection, tmp_path: Path) -> None:
    model_dir, images, _ = collection
    run_embed(model_dir, images, tmp_path / "idx")
    other = make_model(tmp_path / "other", seed=1)
    with pytest.raises(ConfigError, match=r"was built with model .* hash [0-9a-f]{12}"):
        run_embed(other, images, tmp_path / "idx")
    with pytest.raises(ConfigError, match="use the same model"):
        Searcher(tmp_path / "idx", str(other))
    assert len(Searcher(tmp_path / "idx", str(model_dir))) == 12


def test_missing_index_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an index folder"):
        Searcher(tmp_path / "nothing")


def test_image_query_finds_itself_and_same_colour_images_first(collection, tmp_path: Path) -> None:
    model_dir, images, paths = collection
    run_embed(model_dir, images, tmp_path / "idx")
    hits = Searcher(tmp_path / "idx").search_image(load_image(paths[4]), k=3)
    assert hits[0].item.path == str(paths[4]) and hits[0].score == pytest.approx(1.0, abs=2e-3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[1].item.path == str(paths[10])  # the other image of the same colour


def naive_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.array([np.argsort(-(matrix @ q), kind="stable")[:k] for q in query])


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_index_equals_a_full_sort_and_pads_short_results() -> None:
    vectors, queries = unit_vectors(500, 32), unit_vectors(7, 32, seed=1)
    ids = np.arange(500) * 3 + 100
    index = build_index("exact", ids, vectors)
    scores, found = index.search(queries, 10)
    np.testing.assert_array_equal(found, ids[naive_top_k(vectors, queries, 10)])
    np.testing.assert_allclose(scores, np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10], rtol=1e-5)
    index.remove(ids[:495])
    scores, found = index.search(queries[:1], 8)
    assert sorted(found[0, :5]) == sorted(ids[495:]) and list(found[0, 5:]) == [-1, -1, -1]
    assert np.isneginf(scores[0, 5:]).all()


def test_ivf_probing_every_list_is_exact_and_supports_add_remove() -> None:
    vectors, queries = unit_vectors(2000, 32), unit_vectors(20, 32, seed=1)
    ids = np.arange(2000, dtype=np.int64)
    index = build_index("ivf", ids[:1500], vectors[:1500])
    assert isinstance(index, FaissIndex) and index.index.nlist == 34  # sqrt(N) lists, 39+ points each
    index.add(ids[1500:], vectors[1500:])
    index.remove(ids[:100])
    index.effort = index.index.nlist
    _, found = index.search(queries, 10)
    np.testing.assert_array_equal(found, naive_top_k(vectors[100:], queries, 10) + 100)


def test_ivf_pq_supports_add_remove_and_probing_every_list_is_near_exact() -> None:
    vectors, queries = unit_vectors(3000, 32), unit_vectors(20, 32, seed=1)
    ids = np.arange(3000, dtype=np.int64)
    index = build_index("ivf-pq", ids[:2500], vectors[:2500])
    assert isinstance(index, FaissIndex) and type(index.index).__name__ == "IndexIVFPQFastScan"
    index.add(ids[2500:], vectors[2500:])
    index.remove(ids[:100])
    assert sorted(index.stored_ids()) == list(range(100, 3000))
    index.effort = index.max_effort
    found = np.stack([search_reranked(index, q[None], 10, lambda got: vectors[got])[1] for q in queries])
    assert recall_at_k(found, naive_top_k(vectors[100:], queries, 10) + 100) >= 0.95 and found.min() >= 100


def test_an_ivf_pq_file_from_before_fast_scan_loads_with_its_old_candidates(tmp_path: Path) -> None:
    faiss, vectors, ids = import_faiss(), unit_vectors(2000, 32), np.arange(2000)
    legacy = faiss.IndexIVFPQ(faiss.IndexFlatIP(32), 32, 8, 4, 8, faiss.METRIC_INNER_PRODUCT)  # 8-bit codes
    with faiss_threads(1):  # small k-means steps: spinning OpenMP threads crawl on a busy machine
        legacy.train(vectors)
    legacy.add_with_ids(vectors, ids)
    tuning = {"effort": 8, "recall": 0.95, "target": 0.95, "queries": 200, "tuned_on": 2000}  # no candidates
    header = json.dumps({"kind": "ivf-pq", "ids_sha256": ids_digest(ids), "count": 2000, "dim": 32,
                         "trained_on": 2000, "tuning": tuning}).encode()
    blob = faiss.serialize_index(legacy).tobytes()
    prefix = b"clipforge-ann 1\n" + struct.pack("<I", len(header))
    (tmp_path / "ann.faiss").write_bytes(prefix + header + blob)
    saved = read_ann(tmp_path)
    assert not isinstance(saved, str)
    index = saved[0]
    assert index.candidates == LEGACY_PQ_RERANK and index.effort == 8
    assert search_reranked(index, vectors[5:6], 10, lambda got: vectors[got])[1][0] == 5


def test_auto_keeps_pq_codes_unless_they_need_too_many_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = clustered_vectors(4000, "hard", 0)
    pq = build_index("ivf-pq", np.arange(4000), vectors)
    assert isinstance(pq, FaissIndex) and pq.candidates > 1
    monkeypatch.setattr(ann, "AUTO_MAX_RERANK", pq.candidates - 1)
    assert build_auto(np.arange(4000), vectors).kind == "ivf"
    monkeypatch.setattr(ann, "AUTO_MAX_RERANK", pq.candidates)
    assert build_auto(np.arange(4000), vectors).kind == "ivf-pq"


def test_recall_low_is_the_lower_end_of_the_normal_interval() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1], [5, 6, 0, 0]])  # recalls 1.0 and 0.5: mean 0.75, std 0.354, se 0.25
    assert recall_at_k(found, truth) == 0.75
    assert recall_low(found, truth) == pytest.approx(0.75 - 1.96 * 0.25)
    assert recall_low(truth, truth) == 1.0


def test_hnsw_recall_at_10_is_high() -> None:
    vectors, queries = unit_vectors(3000, 32), unit_vectors(50, 32, seed=1)
    index = build_index("hnsw", np.arange(3000), vectors)
    _, found = index.search(queries, 10)
    truth = naive_top_k(vectors, queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95
    with pytest.raises(ConfigError, match="rebuild"):
        index.remove(np.array([1]))


def test_auto_kind_switches_to_ivf_pq_at_the_limit_and_rejects_unknown() -> None:
    assert choose_kind(EXACT_LIMIT - 1) == "exact" and choose_kind(EXACT_LIMIT) == "ivf-pq"
    assert choose_kind(10 * EXACT_LIMIT) == "ivf-pq"
    assert choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ConfigError, match="unknown index kind 'flat'"):
        choose_kind(10, "flat")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_faiss_index_is_saved_and_follows_incremental_runs(collection, tmp_path: Path, kind: str) -> None:
    model_dir, images, paths = collection
    run_embed(model_dir, images, tmp_path / "idx", index=kind)
    saved = read_ann(tmp_path / "idx")
    assert not isinstance(saved, str) and len(saved[0]) == 12 and saved[1].kind == kind
    paths[0].unlink()
    Image.new("RGB", (30, 30), (250, 250, 250)).save(images / "new.png")
    report = run_embed(model_dir, images, tmp_path / "idx", index=kind)
    assert report.index_kind == kind and report.total == 12
    searcher = Searcher(tmp_path / "idx")
    assert searcher.kind == kind and len(searcher) == 12
    hits = searcher.search_image(load_image(images / "new.png"), k=12)
    assert hits[0].item.path == str((images / "new.png").resolve())
    assert str(paths[0]) not in {h.item.path for h in hits}


def test_embed_data_spec_keeps_captions_and_uses_workers(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path / "model")
    paths = make_images(tmp_path / "data", count=6, bad=False)
    for i, path in enumerate(paths):
        path.with_suffix(".txt").write_text(f"caption number {i}\n")
    config = EmbedConfig(str(model_dir), tmp_path / "idx", data=f"folder:{tmp_path / 'data'}", batch_size=4,
                         workers=2, progress=False)
    assert embed_collection(config).added == 6
    hit = Searcher(tmp_path / "idx").search_image(load_image(paths[3]), k=1)[0]
    assert hit.item.caption == "caption number 3" and hit.item.path == str(paths[3])


def test_embed_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of --data SPEC or --images DIR"):
        embed_collection(EmbedConfig("tiny-vit", tmp_path / "idx", progress=False))


def test_cli_embed_then_search_prints_json(collection, tmp_path: Path) -> None:
    model_dir, images, paths = collection
    runner = CliRunner()
    out = runner.invoke(main, ["embed", "--model", str(model_dir), "--images", str(images),
                               "--out", str(tmp_path / "idx"), "--workers", "0", "--batch-size", "4"])
    assert out.exit_code == 0, out.output
    assert "12 images indexed (exact): 12 added" in out.output and "truncated=1" in out.output
    out = runner.invoke(main, ["search", "--index", str(tmp_path / "idx"), "--image", str(paths[5]),
                               "-k", "3", "--json"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.output)["results"]
    assert len(results) == 3 and results[0]["path"] == str(paths[5])
    assert set(results[0]) == {"id", "path", "score", "caption"}
    out = runner.invoke(main, ["search", "--index", str(tmp_path / "idx"), "a red square"])
    assert out.exit_code == 0 and len(out.output.splitlines()) == 10
    out = runner.invoke(main, ["search", "--index", str(tmp_path / "idx")])
    assert out.exit_code != 0 and "exactly one of a TEXT query or --image PATH" in out.output


@pytest.mark.flickr8k
@pytest.mark.slow
def test_flickr8k_dog_on_the_beach_query_finds_dogs(
    flickr8k_root: Path, flickr8k_lit_model: Path, tmp_path: Path
) -> None:
    model_dir = flickr8k_lit_model
    data = f"flickr8k:{flickr8k_root}:test"
    config = EmbedConfig(str(model_dir), tmp_path / "idx", data=data, progress=False)
    assert embed_collection(config).total == 1000
    hits = Searcher(tmp_path / "idx").search_text("a dog running on the beach", k=10)
    dogs = [h for h in hits if any(re.search(r"\b(dog|dogs|puppy)\b", c.lower()) for c in h.item.captions)]
    assert len(dogs) >= 6, [h.item.caption for h in hits]


def clustered_vectors(count: int, setting: str, seed: int) -> np.ndarray:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _vectors import clustered

    return clustered(count, 64, seed, setting)


def test_tuning_spends_more_effort_on_overlapping_clusters_and_fresh_queries_get_the_target() -> None:
    """The effort comes from measured recall, not a formula: it follows the data and holds for new queries."""
    efforts = {}
    for setting in ("easy", "hard"):
        vectors, queries = clustered_vectors(12_000, setting, 0), clustered_vectors(100, setting, 1)
        index = build_index("ivf", np.arange(12_000), vectors, target=0.95)
        assert isinstance(index, FaissIndex) and index.tuning is not None and index.tuning.recall >= 0.95
        _, found = index.search(queries, 10)
        assert recall_at_k(found, naive_top_k(vectors, queries, 10)) >= 0.92  # 100 queries: +-0.02 noise
        efforts[setting] = index.tuning.effort
        assert index.tuning.effort < index.index.nlist  # probing every list would be exact search
    assert efforts["easy"] < efforts["hard"], efforts


def test_pq_codes_reach_the_target_through_exact_rescoring() -> None:
    """Overlapping clusters (what `auto` meets at scale): fast-scan codes + exact re-scoring reach 0.95."""
    vectors, queries = clustered_vectors(12_000, "hard", 0), clustered_vectors(100, "hard", 1)
    index = build_index("ivf-pq", np.arange(12_000), vectors, target=0.95)
    assert isinstance(index, FaissIndex) and index.candidates in PQ_RERANKS
    assert index.tuning is not None and index.tuning.recall >= 0.95 and index.effort < index.max_effort
    truth = naive_top_k(vectors, queries, 10)
    found = np.stack([search_reranked(index, q[None], 10, lambda ids: vectors[ids])[1] for q in queries])
    raw = index.search(queries, 10)[1]
    assert recall_at_k(found, truth) >= 0.92 > recall_at_k(raw, truth)  # re-scoring is what gets there
    scores, ids = search_reranked(index, queries[:1], 5, lambda ids: vectors[ids])
    np.testing.assert_allclose(scores, vectors[ids] @ queries[0], rtol=1e-6)


def test_a_grown_ivf_index_is_patched_and_retuned(collection, tmp_path: Path) -> None:
    model_dir, images, _ = collection
    run_embed(model_dir, images, tmp_path / "idx", index="ivf")
    for i in range(3):  # 12 -> 15 images: more than 10% drift
        Image.new("RGB", (30, 30), (10, 80 * i, 200)).save(images / f"more{i}.png")
    report = run_embed(model_dir, images, tmp_path / "idx", index="ivf")
    saved = read_ann(tmp_path / "idx")
    assert not isinstance(saved, str) and saved[1].tuning is not None
    assert report.index_note == "patched: 3 added, 0 removed" and saved[1].tuning.tuned_on == 15
