"""`clipforge serve` under pressure and attack: model work off the event loop, load shedding,
body limits while streaming, Host-header checks (DNS rebinding) and the optional bearer token."""

from __future__ import annotations

import io
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from clipforge.index import EmbedConfig, Searcher, embed_collection  # noqa: E402
from clipforge.serve.app import MAX_UPLOAD_BYTES, TOKEN_COOKIE, ServeConfig, create_app  # noqa: E402
from test_index import make_images, make_model  # noqa: E402

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guard")
    model = make_model(root / "model")
    make_images(root / "images", count=6, bad=False)
    embed_collection(EmbedConfig(str(model), root / "idx", images=root / "images", workers=0, progress=False))
    return root / "idx"


def png_bytes(size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_server(config: ServeConfig) -> Iterator[str]:
    """The app served by uvicorn on a loopback port in a background thread; yields its base URL."""
    import uvicorn

    port = free_port()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize(
    ("host", "allow", "status"),
    [
        ("127.0.0.1:8000", (), 200),
        ("localhost:8000", (), 200),
        ("LOCALHOST", (), 200),
        ("[::1]:8000", (), 200),
        ("evil.example", (), 400),
        ("evil.example:8000", (), 400),
        ("127.0.0.1.evil.example", (), 400),
        ("", (), 400),
        ("photos.lan:8000", ("photos.lan",), 200),
        ("anything.example", ("*",), 200),
    ],
)
def test_host_header_must_name_this_server(
    index: Path, host: str, allow: tuple[str, ...], status: int
) -> None:
    client = TestClient(create_app(ServeConfig(index, allow_hosts=allow)))
    response = client.get("/api/health", headers={"host": host})
    assert response.status_code == status, response.text
    if status == 400:
        assert "--allow-host" in response.json()["detail"]


def test_a_wildcard_bind_accepts_loopback_names_only_unless_allowed(index: Path) -> None:
    client = TestClient(create_app(ServeConfig(index, host="0.0.0.0")))
    assert client.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/health", headers={"host": "0.0.0.0:8000"}).status_code == 200
    assert client.get("/api/health", headers={"host": "attacker.example"}).status_code == 400


def test_token_guards_the_api_and_images_but_not_the_page(index: Path) -> None:
    client = TestClient(create_app(ServeConfig(index, token=TOKEN)), base_url="http://127.0.0.1:8000")
    denied = client.get("/api/search", params={"q": "red"})
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    wrong = {"authorization": "Bearer wrong-token-000000"}
    assert client.get("/api/health", headers=wrong).status_code == 401
    assert client.get("/images/1").status_code == 401
    assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/search", params={"q": "red"}, headers=bearer).status_code == 200
    assert client.get("/images/1", headers=bearer).status_code == 200


def test_opening_the_page_with_the_token_trades_it_for_a_strict_cookie(index: Path) -> None:
    client = TestClient(create_app(ServeConfig(index, token=TOKEN)), base_url="http://127.0.0.1:8000")
    response = client.get("/", params={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert f"{TOKEN_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/search", params={"q": "red"}).status_code == 200  # the cookie now rides along
    wrong = TestClient(create_app(ServeConfig(index, token=TOKEN)), base_url="http://127.0.0.1:8000")
    assert wrong.get("/", params={"token": "nope"}, follow_redirects=False).status_code == 200
    assert wrong.get("/api/health").status_code == 401


def test_short_tokens_are_refused(index: Path) -> None:
    from clipforge.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 16 characters"):
        ServeConfig(index, token="short")


def test_health_stays_fast_while_uploads_run_the_model(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image search that takes 1.5 s of model time must not hold up /api/health (event loop free)."""
    real, running = Searcher.search_image, threading.Event()

    def slow_search_image(self: Searcher, image: object, k: int = 10) -> object:
        running.set()
        time.sleep(1.5)  # stands in for a big model; a blocking call, as torch's forward is
        return real(self, image, k)  # type: ignore[arg-type]

    monkeypatch.setattr(Searcher, "search_image", slow_search_image)
    with live_server(ServeConfig(index, concurrency=1, queue=8)) as url, httpx.Client(base_url=url) as client:
        files = {"file": ("q.png", png_bytes(), "image/png")}
        uploads = [threading.Thread(target=client.post, args=("/api/search/image",), kwargs={"files": files})
                   for _ in range(3)]
        for upload in uploads:
            upload.start()
        assert running.wait(30)
        waits = []
        for _ in range(5):
            start = time.perf_counter()
            assert client.get("/api/health").status_code == 200
            waits.append(time.perf_counter() - start)
        for upload in uploads:
            upload.join()
    assert max(waits) < 0.5, waits


def test_model_jobs_beyond_the_queue_get_503_with_retry_after(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job running and one waiting fill `concurrency=1, queue=1`: of three requests, one is shed."""
    release = threading.Event()
    real = Searcher.search_text

    def blocked_search_text(self: Searcher, text: str, k: int = 10) -> object:
        release.wait(60)
        return real(self, text, k)

    monkeypatch.setattr(Searcher, "search_text", blocked_search_text)
    with live_server(ServeConfig(index, concurrency=1, queue=1)) as url, httpx.Client(base_url=url) as client:
        answers: list[httpx.Response] = []
        done = threading.Condition()

        def ask() -> None:
            response = client.get("/api/search", params={"q": "a"})
            with done:
                answers.append(response)
                done.notify()

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for thread in threads:
            thread.start()
        with done:
            assert done.wait_for(lambda: answers, timeout=60)  # the shed one answers while two are held
        shed = answers[0]
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert client.get("/api/health").status_code == 200
        release.set()
        for thread in threads:
            thread.join()
    assert sorted(a.status_code for a in answers) == [200, 200, 503]


def test_chunked_uploads_are_cut_off_at_the_limit_while_streaming(index: Path) -> None:
    """A body without Content-Length is refused once it passes the limit, not spooled whole first."""
    offered = 6 * MAX_UPLOAD_BYTES
    with live_server(ServeConfig(index)) as url:
        port = int(url.rsplit(":", 1)[1])
        status, sent = _send_chunked(port, offered)
    assert status == 413
    assert sent < 2.5 * MAX_UPLOAD_BYTES, f"server read {sent / 2**20:.0f} MB before refusing"


def _send_chunked(port: int, total: int) -> tuple[int, int]:
    """Streams a multipart body of `total` bytes in 256 KB chunks until the server answers.

    Returns:
        The response status and how many body bytes were sent before it came.
    """
    head = (b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    chunk = b"0" * 256 * 1024
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        while sent < total and not select.select([conn], [], [], 0)[0]:
            try:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        return int(conn.recv(4096).split(b" ")[1]), sent
