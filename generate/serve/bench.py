"""Load test of the web app and the search benchmark (``dvsa bench serve``, ``dvsa bench index``).

`bench_serve`: the app of a run folder (a tiny toy run when none is given) served by uvicorn on loopback in a
thread; `clients` threads each send `requests` POST /api/caption (a toy photo, dense captions on) one after the
other over their own connection. Every answer must be 200 with a caption: errors and lost answers are counted,
never hidden. Latency is per request (send to last byte); peak memory is this process's peak RSS
(server and clients share it), from getrusage.

`bench_index`: `VectorIndex` on synthetic photos (N photos x R regions of H-dim embeddings built from a few
hundred "object" codes plus noise, like a trained model's; queries of 2-4 object words), query time of FAISS
candidates + exact eq. 8 rerank against exhaustive eq. 8 scoring of every photo, and how often the approximate
top k equals the exhaustive top k.
"""
from __future__ import annotations

import http.client
import io
import resource
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from dvsa.align.index import VectorIndex
from dvsa.generate.serve.app import create_app
from dvsa.generate.serve.toy import build_toy_run, toy_image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:port in a daemon thread (`with ServerThread(app) as url: ...`)."""

    def __init__(self, app, port: int | None = None):
        import uvicorn  # the web server: only what serves needs it

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request."""
    b = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data, ctype) in files.items():
        out.write(f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{b}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={b}"


def bench_serve(run_dir=None, clients: int = 8, requests: int = 50, timeout_s: float = 600.0, log=print) -> dict:
    """Run the load test (module doc); returns the measurements (`format_serve_table` prints them)."""
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dvsa-bench-serve-")
        log("building a toy run folder (no --run given)...")
        run_dir = build_toy_run(Path(tmp.name) / "run")
    app = create_app(run_dir)
    photo = io.BytesIO()
    toy_image("green", "circle", 2).save(photo, "PNG")
    body, ctype = multipart({"dense": "1"}, {"image": ("photo.png", photo.getvalue(), "image/png")})
    lat: list[float] = []
    errors: list[str] = []
    answered = [0]
    lock = threading.Lock()
    deadline = time.time() + timeout_s

    def client(port: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(requests):
            if time.time() > deadline:
                with lock:
                    errors.append("deadline passed")
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/caption", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and b'"caption"' in data
            except (OSError, http.client.HTTPException) as e:
                ok, data = False, str(e).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                    answered[0] += 1
                else:
                    errors.append(data[:200].decode(errors="replace"))
        conn.close()

    with ServerThread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(port,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.time() + 130))
        wall = time.perf_counter() - t0
    if tmp is not None:
        tmp.cleanup()
    sent = clients * requests
    q = sorted(lat)
    return {"clients": clients, "requests_per_client": requests, "sent": sent, "answered": answered[0],
            "errors": len(errors), "lost": sent - answered[0] - len(errors), "first_error": errors[0] if errors else "",
            "p50_ms": 1000 * statistics.median(q) if q else float("nan"),
            "p95_ms": 1000 * q[min(len(q) - 1, int(0.95 * len(q)))] if q else float("nan"),
            "max_ms": 1000 * q[-1] if q else float("nan"), "wall_s": wall, "req_per_s": answered[0] / wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_serve_table(r: dict) -> str:
    head = ("| clients x requests | answered | errors | lost | p50 ms | p95 ms | max ms | req/s | peak RSS MiB |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    row = (f"| {r['clients']} x {r['requests_per_client']} | {r['answered']}/{r['sent']} | {r['errors']} | "
           f"{r['lost']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | {r['req_per_s']:.1f} | "
           f"{r['peak_rss_mib']:.0f} |")
    return head + "\n" + row + (f"\nfirst error: {r['first_error']}" if r["errors"] else "")


# ------------------------------------------------------------------------------------------- index bench
def synthetic_photos(n: int, regions: int = 8, dim: int = 128, objects: int = 500, noise: float = 0.5,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region embeddings float32 [n * regions, dim], offsets [n + 1], object codes [objects, dim]): each photo
    holds `regions` noisy copies of random object codes (one region per object, plus a whole-image mean row)."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(objects, dim)).astype(np.float32) / np.sqrt(dim)
    objs = rng.integers(0, objects, size=(n, regions - 1))
    v = codes[objs] + (noise / np.sqrt(dim)) * rng.normal(size=(n, regions - 1, dim)).astype(np.float32)
    v = np.concatenate([v.mean(1, keepdims=True), v], 1).astype(np.float32)  # row 0: the whole image
    return v.reshape(n * regions, dim), np.arange(0, n * regions + 1, regions, dtype=np.int64), codes


def synthetic_queries(codes: np.ndarray, q: int, seed: int = 1, noise: float = 0.3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    dim = codes.shape[1]
    out = []
    for _ in range(q):
        t = int(rng.integers(2, 5))
        w = codes[rng.integers(0, len(codes), t)] + (noise / np.sqrt(dim)) * rng.normal(size=(t, dim))
        out.append(w.astype(np.float32))
    return out


def bench_index(n: int = 100_000, regions: int = 8, dim: int = 128, queries: int = 50, k: int = 10,
                candidates: int = 200, ivf_threshold: int = 5_000_000, log=print) -> dict:
    t0 = time.perf_counter()
    v, offsets, codes = synthetic_photos(n, regions, dim)
    qs = synthetic_queries(codes, queries)
    vi = VectorIndex(v, offsets, ivf_threshold=ivf_threshold)
    build_s = time.perf_counter() - t0
    log(f"{n} photos x {regions} regions x {dim} dims built in {build_s:.1f} s ({vi.backend})")
    approx_t, exact_t, kept = [], [], 0
    for w in qs:
        t = time.perf_counter()
        a, _ = vi.search(w, k, candidates)
        approx_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        e, _ = vi.exhaustive(w, k)
        exact_t.append(time.perf_counter() - t)
        kept += set(a.tolist()) == set(e.tolist())
    return {"n": n, "regions": regions, "dim": dim, "queries": queries, "k": k, "candidates": candidates,
            "backend": vi.backend, "build_s": build_s,
            "approx_ms": 1000 * statistics.median(approx_t), "exact_ms": 1000 * statistics.median(exact_t),
            "kept_top_k": kept / queries, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_index_table(r: dict) -> str:
    return (f"{r['n']} synthetic photos x {r['regions']} regions x {r['dim']} dims, {r['queries']} queries, "
            f"top {r['k']}; peak RSS {r['peak_rss_mib']:.0f} MiB\n"
            "| search | median query ms | exhaustive top-k kept |\n| --- | --- | --- |\n"
            f"| {r['backend']} top {r['candidates']} + eq. 8 rerank | {r['approx_ms']:.2f} | "
            f"{100 * r['kept_top_k']:.0f}% |\n"
            f"| exhaustive eq. 8 over all photos | {r['exact_ms']:.2f} | 100% |\n"
            f"speed-up x{r['exact_ms'] / r['approx_ms']:.1f}")
