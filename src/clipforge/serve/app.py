"""`clipforge serve`: a FastAPI app over one index folder, with a single-page UI.

Only three kinds of files leave the server: the bundled UI files (fixed names), images the index
holds (looked up by integer id, never by a client-supplied path), and JSON. Uploads are capped at
10 MB and must decode as images.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from clipforge.errors import ClipforgeError, ImageError, MissingExtraError

try:
    from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("fastapi", "serve") from err

from clipforge.data.transforms import load_image
from clipforge.index.search import Hit, Searcher

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_K = 100
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_CLASSIFIER_CACHE_SIZE = 32
_TOO_LARGE = f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB"


@dataclass(frozen=True)
class ServeConfig:
    """Where `clipforge serve` listens and what it serves.

    Attributes:
        index: an index folder written by `clipforge embed`.
        model: the model for queries; defaults to the one recorded in the index.
        host: the interface to bind; loopback unless asked otherwise.
        port: the TCP port.
    """

    index: Path
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000


class _Classifiers:
    """Zero-shot classifiers by label tuple, least recently used dropped first."""

    def __init__(self, searcher: Searcher) -> None:
        from clipforge.eval.templates import get_templates

        self.searcher = searcher
        # The 7-prompt subset keeps a new label set to 7 text encodes per label on a CPU.
        self.templates = get_templates("openai_imagenet_7")
        self.cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    def get(self, labels: tuple[str, ...]) -> Any:
        from clipforge.eval.zeroshot import zero_shot_classifier

        if labels not in self.cache:
            s = self.searcher
            self.cache[labels] = zero_shot_classifier(s.model, s.tokenizer, labels, self.templates)
            if len(self.cache) > _CLASSIFIER_CACHE_SIZE:
                self.cache.popitem(last=False)
        self.cache.move_to_end(labels)
        return self.cache[labels]


def create_app(index: str | Path, model: str | None = None) -> FastAPI:
    """Builds the app for one index folder (the model is loaded once, here)."""
    searcher = Searcher(index, model)
    classifiers = _Classifiers(searcher)
    app = FastAPI(
        title="clipforge",
        summary="Text and image search over an image collection, and zero-shot classification.",
        version=_version(),
    )
    app.middleware("http")(_limit_upload_size)
    _add_api_routes(app, searcher, classifiers)
    _add_file_routes(app, searcher)
    return app


def _version() -> str:
    from clipforge.version import __version__

    return __version__


async def _limit_upload_size(request: Request, call_next: Any) -> Response:
    """Answers 413 from the declared length, before the multipart body is read and spooled."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 64 * 1024:  # room for multipart framing
        return JSONResponse({"detail": _TOO_LARGE}, status_code=413)
    response: Response = await call_next(request)
    return response


async def _read_image(file: UploadFile) -> Any:
    """Decodes an upload, mapping oversize to 413 and non-images to 415."""
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, _TOO_LARGE)
    try:
        return load_image(data, name=file.filename or "upload")
    except ImageError as err:
        raise HTTPException(415, f"not an image: {err}") from err


def _results(hits: list[Hit]) -> dict[str, Any]:
    return {"results": [hit.to_dict() for hit in hits]}


def _add_api_routes(app: FastAPI, searcher: Searcher, classifiers: _Classifiers) -> None:
    @app.get("/api/health", tags=["api"])
    def health() -> dict[str, Any]:
        """Liveness, collection size, index kind and model hash."""
        model = searcher.fingerprint[:12]
        return {"status": "ok", "items": len(searcher), "index": searcher.kind, "model": model}

    @app.get("/api/search", tags=["api"])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="text query")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, Any]:
        """The k indexed images closest to a text query."""
        if not q.strip():
            raise HTTPException(400, "empty query")
        return _results(searcher.search_text(q, k))

    @app.post("/api/search/image", tags=["api"])
    async def search_image(
        file: Annotated[UploadFile, File(description="query image")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, Any]:
        """The k indexed images closest to an uploaded image."""
        return _results(searcher.search_image(await _read_image(file), k))

    @app.post("/api/classify", tags=["api"])
    async def classify(
        file: Annotated[UploadFile, File(description="image to classify")],
        labels: Annotated[str, Form(description="comma-separated labels, e.g. 'cat, dog, car'")],
    ) -> dict[str, Any]:
        """Zero-shot label probabilities for an uploaded image (7-prompt ensemble), best first."""
        return _classify(searcher, classifiers, await _read_image(file), labels)


def _classify(searcher: Searcher, classifiers: _Classifiers, image: Any, labels: str) -> dict[str, Any]:
    from clipforge.eval.zeroshot import classify

    names = tuple(dict.fromkeys(n.strip() for n in labels.split(",") if n.strip()))
    if not names:
        raise HTTPException(400, "labels: give at least one comma-separated label")
    if len(names) > 100:
        raise HTTPException(400, f"labels: at most 100 labels, got {len(names)}")
    try:
        classifier = classifiers.get(names)
    except ClipforgeError as err:
        raise HTTPException(400, f"labels: {err}") from err
    probs = classify(searcher.model, searcher.preprocess(image).unsqueeze(0), classifier)[0]  # [C]
    ranked = sorted(zip(names, probs.tolist(), strict=True), key=lambda pair: -pair[1])
    return {"results": [{"label": name, "prob": round(p, 6)} for name, p in ranked]}


def _add_file_routes(app: FastAPI, searcher: Searcher) -> None:
    static = resources.files("clipforge.serve") / "static"

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
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
    uvicorn.run(create_app(config.index, config.model), host=config.host, port=config.port, log_level="info")
