"""`clipforge serve`: a FastAPI app over one index folder, with a single-page UI.

Only three kinds of files leave the server: the bundled UI files (fixed names), images the index
holds (looked up by integer id, never by a client-supplied path), and JSON. Request bodies are
capped at 10 MB while they stream in (chunked uploads included) and uploads must decode as images.

Model work (decoding uploads, encoding queries, classifying) runs in worker threads, never on the
event loop, so `/api/health` and file requests stay fast during uploads; at most `concurrency` such
jobs run at once and `queue` more may wait, beyond which requests get 503 with Retry-After.

Every request's Host header must name the bound address (or a loopback name, or an `--allow-host`),
which stops DNS-rebinding pages from reading a server on localhost. With `token` set, the API and
the images need `Authorization: Bearer TOKEN` or the cookie that opening `/?token=TOKEN` sets.
"""

from __future__ import annotations

import hmac
import inspect
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import torch

from clipforge.errors import ClipforgeError, ConfigError, ImageError, MissingExtraError

try:
    import anyio.to_thread
    from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("fastapi", "serve") from err

from clipforge.data.loader import torch_threads
from clipforge.data.transforms import load_image
from clipforge.device import Runtime
from clipforge.eval.templates import get_templates
from clipforge.eval.zeroshot import classify, zero_shot_classifier
from clipforge.index.ann import faiss_threads
from clipforge.index.search import Hit, Searcher
from clipforge.version import __version__

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # room for multipart framing and the labels field
MAX_K = 100
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
TOKEN_COOKIE = "clipforge_token"
PROTECTED = ("/api/", "/images/")
_CLASSIFIER_CACHE_SIZE = 32
_RETRY = {"Retry-After": "1"}
_TOO_LARGE = f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB"
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    """Where `clipforge serve` listens and what it serves.

    Attributes:
        index: an index folder written by `clipforge embed`.
        model: the model for queries; defaults to the one recorded in the index.
        host: the interface to bind; loopback unless asked otherwise.
        port: the TCP port.
        token: when set, API and image requests must present it (bearer header or cookie).
        allow_hosts: extra names accepted in the Host header (e.g. the machine's LAN name); `*`: any.
        concurrency: model jobs (image decode + encode, text encode, classify) run at once.
        queue: model jobs that may wait for a slot; more get 503 with Retry-After.
        threads: torch and FAISS threads of the server process; None keeps torch's default.
        runtime: where and how the query model runs (device, backend, precision).
    """

    index: Path
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_hosts: tuple[str, ...] = ()
    concurrency: int = 1
    queue: int = 16
    threads: int | None = None
    runtime: Runtime = Runtime()

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.queue < 0:
            raise ConfigError(f"need concurrency >= 1 and queue >= 0, got {self.concurrency}, {self.queue}")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("--token must be at least 16 characters (e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe())'`)")

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond loopback."""
        return self.host not in LOOPBACK


def accepted_hosts(config: ServeConfig) -> frozenset[str] | None:
    """Host-header names (port stripped, lower case) the server answers; None accepts any."""
    if "*" in config.allow_hosts:
        return None
    names = {config.host.lower(), f"[{config.host.lower()}]", *(h.lower() for h in config.allow_hosts)}
    if config.host in LOOPBACK or config.host in WILDCARD:
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(names)


def _host_name(header: str) -> str:
    """The host part of a Host header: `[::1]:8000` -> `[::1]`, `Example.org:80` -> `example.org`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class _Guard:
    """ASGI middleware: refuses foreign Host headers (400) and, with a token, unauthenticated calls (401)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None, token: str | None) -> None:
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        host = _host_name(request.headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            detail = f"Host {host!r} is not served here (DNS-rebinding guard): serve with --allow-host {host}"
            return JSONResponse({"detail": detail}, status_code=400)
        if self.token is None or not request.url.path.startswith(PROTECTED) or self._authorized(request):
            return None
        headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"detail": "missing or wrong token"}, status_code=401, headers=headers)

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given if scheme.lower() == "bearer" else request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())


class _Gate:
    """Runs blocking model jobs in worker threads: `concurrency` at once, `queue` waiting, the rest 503."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.capacity = concurrency + queue
        self.admitted = 0  # only touched on the event loop, so no lock

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """The job's result, computed off the event loop.

        Raises:
            HTTPException: 503 with Retry-After when the queue is full.
        """
        if self.admitted >= self.capacity:
            raise HTTPException(503, "busy: too many requests in progress, retry shortly", _RETRY)
        self.admitted += 1
        try:
            return await anyio.to_thread.run_sync(job, *args, limiter=self.limiter)
        finally:
            self.admitted -= 1


class _Classifiers:
    """Zero-shot classifiers by label tuple, least recently used dropped first (shared by worker threads)."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        # The 7-prompt subset keeps a new label set to 7 text encodes per label on a CPU.
        self.templates = get_templates("openai_imagenet_7")
        self.cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, labels: tuple[str, ...]) -> torch.Tensor:
        with self.lock:
            if labels in self.cache:
                self.cache.move_to_end(labels)
                return self.cache[labels]
        s = self.searcher
        tokenize = lambda texts: s.tokenizer(texts).to(s.device)  # noqa: E731
        with torch.inference_mode():
            classifier = zero_shot_classifier(s.model, tokenize, labels, self.templates)
        with self.lock:
            self.cache[labels] = classifier
            if len(self.cache) > _CLASSIFIER_CACHE_SIZE:
                self.cache.popitem(last=False)
        return classifier


def create_app(config: ServeConfig) -> FastAPI:
    """Builds the app for one index folder (the model is loaded once, here).

    Raises:
        MissingExtraError: FastAPI is too old to limit bodies while they stream (older versions
            accept `max_body_size` and silently ignore it).
    """
    if "max_body_size" not in inspect.signature(FastAPI).parameters:
        raise MissingExtraError("fastapi>=0.165", "serve")
    searcher = Searcher(config.index, config.model, config.runtime)
    app = FastAPI(
        title="clipforge",
        summary="Text and image search over an image collection, and zero-shot classification.",
        version=__version__,
        max_body_size=MAX_BODY_BYTES,
    )
    app.add_middleware(_Guard, hosts=accepted_hosts(config), token=config.token)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    gate = _Gate(config.concurrency, config.queue)
    _add_api_routes(app, searcher, _Classifiers(searcher), gate)
    _add_file_routes(app, searcher, config.token)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's JSON error, with our wording for the body-size limit FastAPI enforces."""
    assert isinstance(exc, StarletteHTTPException)
    detail = _TOO_LARGE if exc.status_code == 413 else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _upload_bytes(file: UploadFile) -> bytes:
    """The upload's bytes (the body limit already bounds them; this bounds the file part alone)."""
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, _TOO_LARGE)
    return data


def _decode(data: bytes, name: str) -> Any:
    """Decodes an upload (in a worker thread), mapping non-images to 415."""
    try:
        return load_image(data, name=name)
    except ImageError as err:
        raise HTTPException(415, f"not an image: {err}") from err


def _results(hits: list[Hit]) -> dict[str, Any]:
    return {"results": [hit.to_dict() for hit in hits]}


def _add_api_routes(app: FastAPI, searcher: Searcher, classifiers: _Classifiers, gate: _Gate) -> None:
    model = searcher.fingerprint[:12]
    health_body = {"status": "ok", "items": len(searcher), "index": searcher.kind, "model": model}

    @app.get("/api/health", tags=["api"])
    async def health() -> dict[str, Any]:
        """Liveness, collection size, index kind and model hash (answered on the event loop, never queued)."""
        return health_body

    @app.get("/api/search", tags=["api"])
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="text query")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, Any]:
        """The k indexed images closest to a text query."""
        if not q.strip():
            raise HTTPException(400, "empty query")
        return _results(await gate.run(searcher.search_text, q, k))

    @app.post("/api/search/image", tags=["api"])
    async def search_image(
        file: Annotated[UploadFile, File(description="query image")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, Any]:
        """The k indexed images closest to an uploaded image."""
        data, name = await _upload_bytes(file), file.filename or "upload"
        return _results(await gate.run(lambda: searcher.search_image(_decode(data, name), k)))

    @app.post("/api/classify", tags=["api"])
    async def classify(
        file: Annotated[UploadFile, File(description="image to classify")],
        labels: Annotated[str, Form(description="comma-separated labels, e.g. 'cat, dog, car'")],
    ) -> dict[str, Any]:
        """Zero-shot label probabilities for an uploaded image (7-prompt ensemble), best first."""
        names = _label_names(labels)
        data, name = await _upload_bytes(file), file.filename or "upload"
        return await gate.run(lambda: _classify(searcher, classifiers, _decode(data, name), names))


def _label_names(labels: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in labels.split(",") if n.strip()))
    if not names:
        raise HTTPException(400, "labels: give at least one comma-separated label")
    if len(names) > 100:
        raise HTTPException(400, f"labels: at most 100 labels, got {len(names)}")
    return names


@torch.inference_mode()
def _classify(
    searcher: Searcher, classifiers: _Classifiers, image: Any, names: tuple[str, ...]
) -> dict[str, Any]:
    """Label probabilities, best first (runs in a worker thread)."""
    try:
        classifier = classifiers.get(names)
    except ClipforgeError as err:
        raise HTTPException(400, f"labels: {err}") from err
    pixels = searcher.images.preprocess(image).unsqueeze(0).to(searcher.device)  # [1, 3, S, S]
    probs = classify(searcher.model, pixels, classifier)[0].float().cpu().numpy()  # [C]
    ranked = sorted(zip(names, np.asarray(probs).tolist(), strict=True), key=lambda pair: -pair[1])
    return {"results": [{"label": name, "prob": round(p, 6)} for name, p in ranked]}


def _add_file_routes(app: FastAPI, searcher: Searcher, token: str | None) -> None:
    static = resources.files("clipforge.serve") / "static"

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
            # Trade the token in the address for a cookie, so it leaves the address bar and history.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        return HTMLResponse((static / "index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return Response((static / name).read_text(), media_type=STATIC_FILES[name])

    @app.get("/images/{image_id}", tags=["files"])
    def image(image_id: str) -> FileResponse:
        """An indexed image by its id; anything that is not the id of an indexed file is 404."""
        is_id = image_id.isascii() and image_id.isdigit() and len(image_id) <= 18  # fits SQLite's int64
        item = searcher.item(int(image_id)) if is_id else None
        if item is None or not Path(item.path).is_file():
            raise HTTPException(404, "no indexed image with this id")
        return FileResponse(item.path)


def serve(config: ServeConfig) -> None:
    """Runs the app with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as err:
        raise MissingExtraError("uvicorn", "serve") from err
    if config.exposed and config.token is None:
        print(f"clipforge: warning: serving {config.host} without --token: anyone who can reach port "
              f"{config.port} can search the collection and fetch its images", file=sys.stderr)
    with torch_threads(config.threads), faiss_threads(config.threads):
        uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")
