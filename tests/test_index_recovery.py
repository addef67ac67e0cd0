"""Index folders survive crashes, hostile file names, bad files and concurrent runs.

The vector index (`ann.faiss`) is derived from the SQLite rows; these tests put it out of step in
every way a crash can (a kill at each stage of an incremental run, a stale file, a torn file) and
check that afterwards every stored image is its own top-1.
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.cli.main import main
from clipforge.errors import ClipforgeError, DataError
from clipforge.index import EmbedConfig, EmbeddingStore, Searcher, embed_collection
from test_index import make_model

REPO = Path(__file__).resolve().parents[1]
STAGES = ["rows-removed", "batch-added", "rows-added", "ann-written", "ann-saved"]


def embed(model: Path, images: Path, out: Path, kind: str = "exact") -> object:
    config = EmbedConfig(str(model), out, images=images, batch_size=3, workers=0, index=kind, progress=False)
    return embed_collection(config)


def grid_image(path: Path, seed: int) -> Path:
    """A 4x4 grid of random colours: unlike noisy solid colours, no two embed as near-duplicates."""
    grid = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((32, 32), Image.Resampling.NEAREST).save(path)
    return path.resolve()


def make_collection(images: Path, count: int) -> list[Path]:
    """`count` distinct images (some nested), plus a truncated and an empty file."""
    paths = [grid_image(images / ("sub" if i % 3 == 0 else ".") / f"img{i:02d}.png", i) for i in range(count)]
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (images / "empty.png").write_bytes(b"")
    return paths


def change_collection(images: Path, paths: list[Path]) -> None:
    """An incremental run's worth of changes: 1 deleted, 2 changed, 2 new."""
    paths[0].unlink()
    for i, path in enumerate(paths[1:3]):
        grid_image(path, 100 + i)
        os.utime(path, ns=(1 + i, 1 + i))  # a new mtime even on coarse clocks
    for i in range(2):
        grid_image(images / f"new{i}.png", 200 + i)


def assert_every_image_finds_itself(index: Path, images: Path) -> None:
    """The store holds exactly the folder's decodable images, and each finds its own row first."""
    store = EmbeddingStore(index)
    ids, _ = store.embeddings()
    listed = {str(p) for p in images.resolve().rglob("*.png") if p.stat().st_size}
    assert {item.path for item in store.items(ids.tolist()).values()} == listed
    assert_stored_vectors_find_themselves(index)


def assert_stored_vectors_find_themselves(index: Path) -> None:
    """What a reader sees is consistent: the index holds every stored row and each finds itself first."""
    ids, vectors = EmbeddingStore(index).embeddings()
    searcher = Searcher(index)
    assert len(searcher) == len(ids)
    for row_id, vector in zip(ids, vectors, strict=True):
        hits = searcher.search_vector(vector[None].astype(np.float32), k=2)
        assert hits[0].item.id == row_id, (row_id, [h.item.id for h in hits])


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    return make_model(tmp_path / "model"), tmp_path / "images", make_collection(tmp_path / "images", 14)


def embedded(collection: tuple[Path, Path, list[Path]], kind: str) -> tuple[Path, Path, list[Path], Path]:
    """(model, images, paths, index folder) after a first run over the collection."""
    model, images, paths = collection
    idx = images.parent / "idx"
    embed(model, images, idx, kind)
    return model, images, paths, idx


@pytest.mark.parametrize(
    ("kind", "how"), [("ivf", "patched: 3 added, 3 removed"), ("hnsw", "built (an HNSW graph cannot delete")]
)
def test_an_ann_file_older_than_the_rows_is_patched(collection, tmp_path: Path, kind: str, how: str) -> None:
    """The state a kill between the row commit and the index save leaves: rows new, ann.faiss old."""
    model, images, paths, idx = embedded(collection, kind)
    old = (idx / "ann.faiss").read_bytes()
    for i, path in enumerate(paths[1:4]):  # same count, new row ids: a count check cannot tell
        grid_image(path, 100 + i)
        os.utime(path, ns=(1 + i, 1 + i))
    embed(model, images, idx, kind)
    (idx / "ann.faiss").write_bytes(old)
    assert_every_image_finds_itself(idx, images)  # a reader patches in memory
    report = embed(model, images, idx, kind)
    assert report.unchanged == 14 and how in report.index_note  # type: ignore[attr-defined]
    assert_every_image_finds_itself(idx, images)


@pytest.mark.parametrize(("kind", "damage"), [("ivf", "truncated"), ("hnsw", "garbage"), ("ivf", "empty")])
def test_a_torn_or_foreign_ann_file_is_rebuilt_not_fatal(
    collection, tmp_path: Path, kind: str, damage: str
) -> None:
    model, images, _, idx = embedded(collection, kind)
    data = (idx / "ann.faiss").read_bytes()
    broken = {"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage]
    (idx / "ann.faiss").write_bytes(broken)
    assert_every_image_finds_itself(idx, images)
    report = embed(model, images, idx, kind)
    assert report.index_note.startswith("built") and "ann.faiss" in report.index_note  # type: ignore[attr-defined]
    assert_every_image_finds_itself(idx, images)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing catches it, so the run stops where it is."""


def _kill_cases() -> list[object]:
    """Every stage for each kind (the exact index writes no ANN file); IVF's in the quick suite."""
    cases = [(k, s) for k in ("ivf", "hnsw", "exact") for s in STAGES if (k, s) != ("exact", "ann-written")]
    return [pytest.param(k, s, marks=[] if k == "ivf" else [pytest.mark.slow]) for k, s in cases]


@pytest.mark.parametrize(("kind", "stage"), _kill_cases())
def test_a_run_stopped_at_any_stage_is_completed_by_the_next(
    collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, stage: str
) -> None:
    import clipforge.index.embed as embed_module

    model, images, paths, idx = embedded(collection, kind)
    change_collection(images, paths)

    def crash_point(at: str) -> None:
        if at == stage:
            raise _Killed(at)

    monkeypatch.setattr(embed_module, "crash_point", crash_point)
    with pytest.raises(_Killed):
        embed(model, images, idx, kind)
    monkeypatch.undo()
    assert_stored_vectors_find_themselves(idx)  # a search between the crash and the next run
    embed(model, images, idx, kind)
    assert_every_image_finds_itself(idx, images)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "stage"), [("exact", "batch-added"), ("ivf", "ann-written"),
                                             ("hnsw", "rows-added"), ("ivf", "rows-removed")])
def test_sigkill_at_a_stage_then_rerun_finds_every_image(
    collection, tmp_path: Path, kind: str, stage: str
) -> None:
    """A real SIGKILL in a `clipforge embed` process (no cleanup runs), then a normal run."""
    model, images, paths, idx = embedded(collection, kind)
    change_collection(images, paths)
    env = {**os.environ, "CLIPFORGE_CRASH_AT": stage, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "clipforge.cli.main", "embed", "--model", str(model), "--images",
               str(images), "--out", str(idx), "--workers", "0", "--batch-size", "3", "--index", kind]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    embed(model, images, idx, kind)
    assert_every_image_finds_itself(idx, images)
    assert not list(idx.glob(".ann.faiss.*.tmp"))  # the killed writer's temporary file is gone


def test_non_utf8_file_names_are_stored_and_found_again(tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    images = tmp_path / "images"
    paths = [grid_image(images / f"{i}.png", i) for i in range(4)]
    odd = images / os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8
    paths[0].rename(odd)
    embed(model, images, tmp_path / "idx")
    assert_every_image_finds_itself(tmp_path / "idx", images)
    store = EmbeddingStore(tmp_path / "idx")
    assert str(odd.resolve()) in store.signatures()
    again = embed(model, images, tmp_path / "idx")
    assert again.unchanged == 4  # type: ignore[attr-defined]
    command = ["search", "--index", str(tmp_path / "idx"), "--image", str(paths[1]), "-k", "4"]
    out = CliRunner().invoke(main, command)
    assert out.exit_code == 0, out.output
    assert "caf\\udce9 \\udcff.png'" in out.output  # quoted, as every command prints odd names
    served = _served_bytes(tmp_path / "idx", odd)
    assert served == odd.read_bytes()


def _served_bytes(index: Path, path: Path) -> bytes:
    """The bytes `clipforge serve` returns for the indexed file at `path` (found by its id)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.serve.app import ServeConfig, create_app

    item_id = EmbeddingStore(index).signatures()[str(path.resolve())].id
    client = TestClient(create_app(ServeConfig(index)), base_url="http://127.0.0.1:8000")
    results = client.get("/api/search", params={"q": "x", "k": 4}).json()["results"]
    assert any(r["id"] == item_id and r["path"].endswith("caf\\xe9 \\xff.png") for r in results)
    return client.get(f"/images/{item_id}").content


def test_a_second_run_on_a_locked_index_refuses_with_the_holder(collection, tmp_path: Path) -> None:
    model, images, _ = collection
    idx = tmp_path / "idx"
    idx.mkdir()
    with (idx / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("12345\n")
        held.flush()
        with pytest.raises(ClipforgeError, match=r"being updated by another process \(pid 12345\)"):
            embed(model, images, idx)
    assert embed(model, images, idx).total == 14  # type: ignore[attr-defined]


def test_known_bad_files_are_counted_but_not_read_again_until_they_change(
    collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipforge.index.embed as embed_module

    model, images, _ = collection
    (images / "cut.png").write_bytes(png_bytes()[:60])
    first = embed(model, images, tmp_path / "idx")
    counts = first.bad.report()  # type: ignore[attr-defined]
    assert (counts["truncated"], counts["zero_bytes"], counts["corrupt_image"]) == (2, 1, 0)
    read: list[str] = []
    monkeypatch.setattr(embed_module, "read_file", lambda path: read.append(path) or Path(path).read_bytes())
    second = embed(model, images, tmp_path / "idx")
    assert second.bad.report() == counts and read == []  # type: ignore[attr-defined]
    (images / "cut.png").write_bytes(png_bytes())
    os.utime(images / "cut.png", ns=(5, 5))
    third = embed(model, images, tmp_path / "idx")
    assert third.added == 1 and read == [str((images / "cut.png").resolve())]  # type: ignore[attr-defined]
    assert third.bad.report()["truncated"] == 1  # type: ignore[attr-defined]


def test_an_empty_folder_or_index_says_so(tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(main, ["embed", "--model", str(model), "--images", str(tmp_path / "empty"),
                                    "--out", str(tmp_path / "idx")])
    assert out.exit_code != 0 and "no images in" in out.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="no usable images in .*corrupt_image=1"):
        embed(model, tmp_path / "bad", tmp_path / "idx")
    out = CliRunner().invoke(main, ["search", "--index", str(tmp_path / "idx"), "a dog"])
    assert out.exit_code != 0 and "holds no images" in out.output
