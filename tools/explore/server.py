"""The explorer's web server: one page, its three files, and the JSON, thumbnails and images it asks for.

Starlette routes on uvicorn, bound to 127.0.0.1 unless told otherwise. It serves nothing but its own page
(``static/index.html``, ``app.js``, ``style.css``, by name from a fixed list), the catalog's data, and the
split's images by their COCO image id (``/image/<id>``, ``/thumb/<id>``): a request names an id, never a path,
and an id's file is served only when the ground truth's ``file_name`` stays inside the image folder
(:func:`tools.explore.catalog.safe_image_path`). Requests whose Host header is not the server's are refused
(a page elsewhere cannot read the split through DNS rebinding).

    GET  /                      the page
    GET  /static/<name>         app.js, style.css
    GET  /api/meta              the runs' TIDE breakdowns, categories, the live model (or null)
    GET  /api/images            ordered, filtered image ids and one page of cards (query: sort desc run thr cls
                                err offset limit)
    GET  /api/image/<id>        one image's gt and every detection of each run, with their TIDE types
    GET  /api/detections        COCO results of a run for the filtered images, or one image (id=): a download
    GET  /thumb/<id>            a JPEG thumbnail (longest side THUMB_SIZE)
    GET  /image/<id>            the image file
    POST /api/predict           body: an image file; the live model's detections and its time (with --weight)
"""
from __future__ import annotations

import errno
import json
import logging
import math
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional

import cv2
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tools.explore.catalog import ERROR_TYPES, SORT_KEYS, Catalog
from tools.explore.live import MAX_UPLOAD_BYTES, LiveModel
from utils.errors import UserError

__all__ = ["build_app", "bind", "Explorer", "STATIC", "THUMB_SIZE"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}  # everything /static/ serves
THUMB_SIZE = 320  # px, longest side
MAX_PAGE = 500  # cards per request


def _bad(message: str) -> HTTPException:
    return HTTPException(400, message)


def _param(request: Request, name: str, kind, default, check=None):
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise _bad(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if check is not None and not check(value):
        raise _bad(f"{name}={raw!r} is out of range")
    return value


def _view(request: Request, catalog: Catalog) -> dict:
    """The filters and sort of a request, checked: a bad value is a 400 naming it."""
    sort = request.query_params.get("sort") or "errors"
    if sort not in SORT_KEYS:
        raise _bad(f"sort={sort!r}: one of {', '.join(SORT_KEYS)}")
    err = request.query_params.get("err") or None
    if err is not None and err not in ERROR_TYPES:
        raise _bad(f"err={err!r}: one of {', '.join(ERROR_TYPES)}")
    return {"sort": sort, "desc": _param(request, "desc", int, 1, lambda v: v in (0, 1)) == 1,
            "run": _param(request, "run", int, 0, lambda v: 0 <= v < len(catalog.runs)),
            "thr": _param(request, "thr", float, 0.0, lambda v: math.isfinite(v)),
            "cls": _param(request, "cls", int, None, lambda v: v in catalog.categories), "err": err}


def build_app(catalog: Catalog, live: Optional[LiveModel] = None, *, hosts: tuple[str, ...] = ("127.0.0.1",)):
    """The Starlette application over ``catalog`` (and ``live``), answering only to the Host names ``hosts``."""

    def index(request: Request):
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    def static(request: Request):
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    def meta(request: Request):
        return JSONResponse({**catalog.summary(), "live": live.info() if live is not None else None,
                             "has_images": catalog.image_dir is not None})

    def images(request: Request):
        v = _view(request, catalog)
        offset = _param(request, "offset", int, 0, lambda x: x >= 0)
        limit = _param(request, "limit", int, 48, lambda x: 1 <= x <= MAX_PAGE)
        order = catalog.order(**v)
        return JSONResponse({"total": int(len(order)), "ids": [catalog.images[k]["id"] for k in order.tolist()],
                             "offset": offset,
                             "items": catalog.page(order, offset, limit, run=v["run"], thr=v["thr"])})

    def index_of(request: Request) -> int:
        k = catalog.index.get(request.path_params["image_id"])
        if k is None:
            raise HTTPException(404, f"no image with id {request.path_params['image_id']}")
        return k

    def image_data(request: Request):
        return JSONResponse(catalog.image(index_of(request)))

    def detections(request: Request):
        v = _view(request, catalog)
        image_id = _param(request, "id", int, None)
        if image_id is not None:
            if image_id not in catalog.index:
                raise HTTPException(404, f"no image with id {image_id}")
            indices, tag = [catalog.index[image_id]], f"_image{image_id}"
        else:
            indices, tag = catalog.order(**v), ""
        dets = catalog.detections(indices, run=v["run"], thr=v["thr"], cls=v["cls"])
        name = f"{Path(catalog.runs[v['run']].name).stem}{tag}_score{v['thr']:g}.json"
        return Response(json.dumps(dets), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @lru_cache(maxsize=2048)
    def thumbnail(k: int) -> Optional[bytes]:
        path, info = catalog.paths[k], catalog.images[k]
        # JPEG decodes at half size directly (much faster) where that still leaves a full-size thumbnail
        half = max(info["width"], info["height"]) >= 2 * THUMB_SIZE
        image = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2 if half else cv2.IMREAD_COLOR) if path else None
        if image is None:
            return None
        scale = THUMB_SIZE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return data.tobytes() if ok else None

    def thumb(request: Request):
        data = thumbnail(index_of(request))
        if data is None:
            raise HTTPException(404, "image file missing or unreadable")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def image_file(request: Request):
        path = catalog.paths[index_of(request)]
        if path is None:
            raise HTTPException(404, "image file missing")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    async def predict(request: Request):
        if live is None:
            raise HTTPException(404, "no live model: start the explorer with --weight")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"image larger than {MAX_UPLOAD_BYTES >> 20} MB")
        body = await request.body()
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"image larger than {MAX_UPLOAD_BYTES >> 20} MB")
        try:
            return JSONResponse(await run_in_threadpool(live.predict_bytes, body))
        except ValueError as e:
            raise _bad(str(e)) from None

    async def error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    routes = [Route("/", index), Route("/static/{name}", static), Route("/api/meta", meta),
              Route("/api/images", images), Route("/api/image/{image_id:int}", image_data),
              Route("/api/detections", detections), Route("/thumb/{image_id:int}", thumb),
              Route("/image/{image_id:int}", image_file), Route("/api/predict", predict, methods=["POST"])]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: error})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); a port in use is a one-line UserError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as every server: a port whose last connections wait out TIME_WAIT can be bound again (not a second listener)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use: pass another --port (0 picks a free one)") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Explorer:
    """The server over a catalog, on a bound socket: :meth:`run` blocks (the command), :meth:`start` /
    :meth:`stop` run it in a thread (eval.py, tests)."""

    def __init__(self, catalog: Catalog, live: Optional[LiveModel] = None, *, host: str = "127.0.0.1",
                 port: int = 8000, sock: Optional[socket.socket] = None):
        self.sock = sock or bind(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        wildcard = self.host in ("0.0.0.0", "::")
        hosts = ("*",) if wildcard else tuple(dict.fromkeys((self.host, "127.0.0.1", "localhost", "::1")))
        config = uvicorn.Config(build_app(catalog, live, hosts=hosts), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "Explorer":
        self._thread = threading.Thread(target=self.run, name="explorer", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
