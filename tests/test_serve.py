"""The web app's JSON API with FastAPI's TestClient: caption, align, search, limits, errors, binding default."""
import io

import pytest
from api_fakes import toy_run
from dvsa.align.aligner import Aligner
from dvsa.align.index import Index
from dvsa.generate.serve.app import Limits, create_app
from dvsa.generate.serve.toy import toy_image
from fastapi.testclient import TestClient
from PIL import Image


def png(im) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    run = toy_run(tmp_path_factory)
    al = Aligner.load(run)
    idx = Index.build(al, sorted((run / "photos").glob("*.png")), show_progress=False)
    app = create_app(run, idx, Limits(max_bytes=200_000, max_pixels=300 * 300), aligner=al)
    return TestClient(app)


def test_caption_and_dense(client):
    r = client.post("/api/caption", files={"image": ("p.png", png(toy_image("red", "square")), "image/png")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["caption"] and d["width"] == 64 and d["regions"] and len(d["regions"][0]["box"]) == 4


def test_align(client):
    r = client.post("/api/align", files={"image": ("p.png", png(toy_image("blue", "circle")), "image/png")},
                    data={"sentence": "a blue circle"})
    assert r.status_code == 200, r.text
    assert [s["words"] for s in r.json()["snippets"]] and r.json()["tokens"] == ["a", "blue", "circle"]


def test_search_and_photos(client):
    r = client.get("/api/search", params={"q": "a green square", "k": 3})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["rank"] for x in res] == [1, 2, 3]
    assert client.get(res[0]["url"]).headers["content-type"] == "image/png"
    assert client.get("/api/photo/999").status_code == 404


def test_too_many_bytes_is_413(client):
    r = client.post("/api/caption", files={"image": ("big.png", b"\0" * 300_000, "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_too_many_pixels_is_400(client):
    r = client.post("/api/caption", files={"image": ("huge.png", png(Image.new("RGB", (400, 400))), "image/png")})
    assert r.status_code == 400 and "pixels" in r.json()["detail"]


def test_not_an_image_is_400_with_one_line(client):
    r = client.post("/api/caption", files={"image": ("notes.txt", b"hello, not a picture", "text/plain")})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "notes.txt" in detail and "\n" not in detail


def test_page_and_health(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="photo"' in page.text and "/static/app.js" in page.text
    assert "api/caption" in client.get("/static/app.js").text
    assert client.get("/api/health").json() == {"status": "ok", "caption": True, "align": True, "index": 24}


def test_serve_binds_to_loopback_by_default(monkeypatch, tmp_path_factory):
    import uvicorn
    from dvsa.scripts import serve

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(host=host, port=port))
    monkeypatch.setattr(serve, "create_app", lambda *a, **k: object())
    assert serve.main([str(toy_run(tmp_path_factory))]) == 0
    assert seen == {"host": "127.0.0.1", "port": 8000}
