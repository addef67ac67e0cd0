"""The HTTP API of `clipforge serve`, through FastAPI's test client: search, classify, files, security."""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402

from clipforge.checkpoint import (
    load_model,  # noqa: E402
    weights_fingerprint,  # noqa: E402
)
from clipforge.index import EmbedConfig, embed_collection  # noqa: E402
from clipforge.serve.app import MAX_UPLOAD_BYTES, ServeConfig, create_app  # noqa: E402
from test_index import make_images, make_model  # noqa: E402

LOCAL = "http://127.0.0.1:8000"


class Served(NamedTuple):
    client: TestClient
    paths: list[Path]  # the indexed images
    secret: Path  # a file beside the index that must never be served
    model: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("serve")
    model = make_model(root / "model")
    paths = make_images(root / "images", count=8)
    embed_collection(EmbedConfig(str(model), root / "idx", images=root / "images", workers=0, progress=False))
    (root / "secret.txt").write_text("do not serve me")
    client = TestClient(create_app(ServeConfig(root / "idx")), base_url=LOCAL)
    return Served(client, paths, root / "secret.txt", model)


def png_bytes(color: tuple[int, int, int] = (220, 30, 30), size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_reports_the_collection(served: Served) -> None:
    client = served.client
    body = client.get("/api/health").json()
    fingerprint = weights_fingerprint(load_model(served.model))  # the hash the index recorded
    assert body == {"status": "ok", "items": 8, "index": "exact", "model": fingerprint[:12]}


def test_text_search_returns_k_ranked_results(served: Served) -> None:
    client, paths = served.client, served.paths
    response = client.get("/api/search", params={"q": "a red square", "k": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5 and set(results[0]) == {"id", "path", "score", "caption"}
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {r["path"] for r in results} <= {str(p) for p in paths}


@pytest.mark.parametrize("params", [{"q": ""}, {"q": "dog", "k": 0}, {"q": "dog", "k": 101}, {}])
def test_bad_search_parameters_are_rejected(served: Served, params: dict[str, object]) -> None:
    client = served.client
    assert client.get("/api/search", params=params).status_code == 422


def test_blank_query_is_400(served: Served) -> None:
    client = served.client
    response = client.get("/api/search", params={"q": "   "})
    assert response.status_code == 400 and response.json()["detail"] == "empty query"


def test_image_search_finds_the_uploaded_image(served: Served) -> None:
    client, paths = served.client, served.paths
    files = {"file": ("q.png", paths[3].read_bytes(), "image/png")}
    results = client.post("/api/search/image", params={"k": 2}, files=files).json()["results"]
    assert results[0]["path"] == str(paths[3]) and results[0]["score"] == pytest.approx(1.0, abs=2e-3)


def test_classify_returns_sorted_probabilities_that_sum_to_one(served: Served) -> None:
    client = served.client
    files = {"file": ("q.png", png_bytes(), "image/png")}
    response = client.post("/api/classify", files=files, data={"labels": "dog, cat ,,car, dog"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert sorted(r["label"] for r in results) == ["car", "cat", "dog"]
    probs = [r["prob"] for r in results]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4) and probs == sorted(probs, reverse=True)


def test_classify_matches_the_zero_shot_library(served: Served) -> None:
    from clipforge.checkpoint import load
    from clipforge.eval.templates import get_templates
    from clipforge.eval.zeroshot import classify, zero_shot_classifier

    model, preprocess, tokenizer = load(served.model)
    classifier = zero_shot_classifier(model, tokenizer, ["dog", "cat"], get_templates("openai_imagenet_7"))
    pixels = preprocess(Image.open(io.BytesIO(png_bytes()))).unsqueeze(0)  # [1, 3, S, S]
    expected = classify(model, pixels, classifier)[0].numpy()
    files = {"file": ("q.png", png_bytes(), "image/png")}
    results = served.client.post("/api/classify", files=files, data={"labels": "dog,cat"}).json()["results"]
    got = {r["label"]: r["prob"] for r in results}
    np.testing.assert_allclose([got["dog"], got["cat"]], expected, atol=1e-5)
    assert not np.allclose(expected, 0.5, atol=1e-4)  # the model does tell the labels apart


def test_classify_needs_a_label(served: Served) -> None:
    client = served.client
    files = {"file": ("q.png", png_bytes(), "image/png")}
    response = client.post("/api/classify", files=files, data={"labels": " , ,"})
    assert response.status_code == 400 and "at least one" in response.json()["detail"]


@pytest.mark.parametrize("url", ["/api/search/image", "/api/classify"])
def test_uploads_over_10_mb_are_413(served: Served, url: str) -> None:
    client = served.client
    files = {"file": ("big.png", b"\x89PNG" + b"0" * MAX_UPLOAD_BYTES, "image/png")}
    response = client.post(url, files=files, data={"labels": "a"})
    assert response.status_code == 413 and "10 MB" in response.json()["detail"]


@pytest.mark.parametrize("payload", [b"just some text", b"", b"\x89PNG\r\n\x1a\n truncated"])
def test_non_images_are_415_with_a_message(served: Served, payload: bytes) -> None:
    client = served.client
    response = client.post("/api/search/image", files={"file": ("x.png", payload, "image/png")})
    assert response.status_code == 415 and response.json()["detail"].startswith("not an image")


def test_indexed_images_are_served_by_id(served: Served) -> None:
    client = served.client
    result = client.get("/api/search", params={"q": "x", "k": 1}).json()["results"][0]
    response = client.get(f"/images/{result['id']}")
    assert response.status_code == 200 and response.content == Path(result["path"]).read_bytes()
    assert response.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "url",
    [
        "/images/999999",
        "/images/-1",
        "/images/1.0",
        "/images/99999999999999999999999",
        "/images/..%2F..%2Fsecret.txt",
        "/images/%2e%2e/%2e%2e/secret.txt",
        "/images/..%252Fsecret.txt",
        "/images/%2Fetc%2Fpasswd",
        "/images//etc/passwd",
        "/images/1/../../secret.txt",
        "/images/%31%2f..%2fsecret.txt",
        "/static/..%2F..%2Fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/index.html",
        "/static/../app.py",
        "/..%2Fapp.py",
    ],
)
def test_path_traversal_in_any_form_is_404(served: Served, url: str) -> None:
    client = served.client
    response = client.get(url)
    assert response.status_code == 404, url
    assert b"do not serve me" not in response.content and b"create_app" not in response.content


def test_absolute_path_of_an_indexed_file_is_not_a_route(served: Served) -> None:
    client, paths = served.client, served.paths
    assert client.get(f"/images/{paths[0]}").status_code == 404


def test_page_assets_and_openapi_are_served(served: Served) -> None:
    client = served.client
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    api = set(client.get("/openapi.json").json()["paths"])
    assert {"/api/health", "/api/search", "/api/search/image", "/api/classify", "/images/{image_id}"} <= api
    assert client.get("/docs").status_code == 200


def test_serve_command_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import clipforge.serve.app as app_module
    from clipforge.cli.main import main

    calls = []
    monkeypatch.setattr(app_module, "serve", calls.append)
    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (calls[0].host, calls[0].port, calls[0].model) == ("127.0.0.1", 8000, None)
