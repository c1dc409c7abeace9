"""`create_app(run_dir, index=None, limits=Limits())`: a FastAPI app over a run folder's models.

Routes:

    GET  /                 the page (static/index.html + static/app.js): upload a photo, see its caption, its dense
                           region captions drawn on it, and a typed sentence's words on their boxes; with an index,
                           type a sentence and see ranked photos
    GET  /api/health       {"status": "ok", "caption": bool, "align": bool, "index": int photos or 0}
    POST /api/caption      multipart "image" (+ form "dense": 0/1, default 1) -> {"caption", "score", "logprob",
                           "width", "height", "regions": [{"box", "caption", "score"}, ...]}
    POST /api/align        multipart "image" + form "sentence" -> `Aligner.align`'s dict
    GET  /api/search?q=&k= -> {"query", "results": [{"rank", "image_id", "score", "url"}]}   (needs an index)
    GET  /api/photo/{n}    the n-th photo of the index (only those files are ever served)

Limits (`Limits`): a request body over `max_bytes` is refused with 413 (from Content-Length before anything is
read, else while it streams in); an image over `max_pixels` with 400 (checked from its header, before
decoding); a file that is not an image with 400 and one line of JSON {"detail": "..."}; `max_k` bounds
search results. The models are loaded once, when the app is made, and shared by all requests; each model call
holds the model's lock (`Captioner.lock`, `Aligner.lock`), so concurrent requests queue instead of racing.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dvsa.align.aligner import Aligner
from dvsa.align.index import Index
from dvsa.data.errors import CheckpointError, DvsaError, UsageError
from dvsa.data.images import ImageInputError, as_rgb
from dvsa.generate.captioner import Captioner
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # request body (the upload and its form fields)
    max_pixels: int = 40_000_000  # width x height of an uploaded image
    max_sentence_chars: int = 500
    max_k: int = 50  # most search results
    dense_top: int = 10  # dense regions returned per photo


class BodyLimit:
    """ASGI middleware (`app.add_middleware(BodyLimit, max_bytes=...)`): 413 for a request body over `max_bytes` (Content-Length, or counted as it streams)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracked(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail": "request body larger than the limit of {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _static(name: str) -> str:
    return resources.files("dvsa.generate.serve").joinpath("static", name).read_text(encoding="utf-8")


def create_app(run_dir, index=None, limits: Limits | None = None, captioner: Captioner | None = None,
               aligner: Aligner | None = None, device: str = "cpu") -> FastAPI:
    """The app (module doc). run_dir: a pipeline run folder (RUN/gen_full, RUN/gen_region, RUN/align ...);
    index: a folder written by `dvsa index` (or an `Index`). `captioner` / `aligner` replace the loaded ones."""
    limits = limits or Limits()
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"{run}: not a run folder")
    cap = captioner or Captioner.load(run, device=device)
    try:
        al = aligner or Aligner.load(run, device=device)
    except CheckpointError:
        al = None  # a run without an alignment model: captions only
    for m in (cap, al):
        if m is not None:
            m.max_pixels = limits.max_pixels
    idx = index if isinstance(index, Index) or index is None else Index.load(index, aligner=al, device=device)
    if idx is not None:
        idx.aligner.max_pixels = limits.max_pixels

    app = FastAPI(title="dvsa", description="Deep Visual-Semantic Alignments: captions, alignments, search")
    app.state.captioner, app.state.aligner, app.state.index, app.state.limits = cap, al, idx, limits
    page, script = _static("index.html"), _static("app.js")

    @app.exception_handler(DvsaError)
    async def dvsa_error(request, exc: DvsaError):
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=400)

    async def read_image(image: UploadFile) -> bytes:
        data = await image.read()
        if not data:
            raise HTTPException(400, "the upload is empty (0 bytes)")
        return data

    def upload_error(e: ImageInputError, image: UploadFile):
        name = image.filename or "upload"
        raise HTTPException(400, f"{name}: {e.reason}")

    @app.get("/", response_class=HTMLResponse)
    def home():
        return page

    @app.get("/static/app.js")
    def app_js():
        return Response(script, media_type="application/javascript")

    @app.get("/api/health")
    def health():
        return {"status": "ok", "caption": True, "align": al is not None, "index": len(idx) if idx else 0}

    @app.post("/api/caption")
    async def caption(image: UploadFile = File(...), dense: int = Form(1)):
        data = await read_image(image)
        try:
            return await run_in_threadpool(_caption, cap, data, bool(dense), limits)
        except ImageInputError as e:
            upload_error(e, image)

    @app.post("/api/align")
    async def align(image: UploadFile = File(...), sentence: str = Form(...)):
        if al is None:
            raise HTTPException(404, "this run folder has no alignment model (RUN/align/model.pt)")
        if len(sentence) > limits.max_sentence_chars:
            raise HTTPException(400, f"the sentence is longer than {limits.max_sentence_chars} characters")
        data = await read_image(image)
        try:
            return await run_in_threadpool(al.align, data, sentence)
        except ImageInputError as e:
            upload_error(e, image)

    @app.get("/api/search")
    def search(q: str = Query(..., max_length=limits.max_sentence_chars), k: int = Query(10, ge=1)):
        if idx is None:
            raise HTTPException(404, "no index: start the server with --index INDEX (built by `dvsa index`)")
        k = min(k, limits.max_k)
        try:
            results = idx.search(q, k)
        except UsageError as e:
            raise HTTPException(400, str(e)) from None
        where = {image_id: n for n, image_id in enumerate(idx.ids)}
        for r in results:
            r["url"] = f"/api/photo/{where[r['image_id']]}"
            r.pop("path", None)
        return {"query": q, "results": results}

    @app.get("/api/photo/{n}")
    def photo(n: int):
        if idx is None or not 0 <= n < len(idx) or not idx.paths[n] or not Path(idx.paths[n]).is_file():
            raise HTTPException(404, "no such photo in the index")
        return FileResponse(idx.paths[n])

    if limits.max_bytes:
        app.add_middleware(BodyLimit, max_bytes=limits.max_bytes)
    return app


def _caption(cap: Captioner, data: bytes, dense: bool, limits: Limits) -> dict:
    pil = as_rgb(data, limits.max_pixels, name="upload")
    out = dict(cap.caption(pil))
    out.update(width=pil.width, height=pil.height, regions=[])
    if dense:
        res = cap.dense(pil, top=limits.dense_top)
        out["regions"] = [{"box": r["box"], "caption": r["caption"], "score": r["score"]} for r in res["regions"]]
    return out
