"""``deltacd review RUN_DIR``: the run's web map with a review mode, served to the analyst's browser.

The page is the run's web map (:func:`deltacd.report.webmap.write_webmap`, built once into a
temporary folder when the server starts) with ``review.js``: click an object, answer it (change /
no change / skip, or the damage grade), jump to the object the classifier most wants reviewed.
Each answer goes to :class:`~deltacd.review.session.ReviewSession`, so it is one SQLite transaction
in ``RUN_DIR/review.gpkg`` before the browser hears back, and the classifier is retrained. The map
is then recoloured from a PNG overlay of every object's state (P(change), or the damage grade),
drawn from a raster of object rows on the map's grid made once at start: a table look-up and a PNG
encoding per answer, whatever the number of objects.

**Why the standard library's** :class:`http.server.ThreadingHTTPServer`: one analyst on their own
machine, a few requests a click, no dependency to install or audit; threads keep the page's images
loading while an answer is trained. The session is shared and guarded by one lock, so two tabs
answer one after the other, each answer its own transaction.

**Who may talk to it.** It listens on 127.0.0.1 unless ``host`` says otherwise (a named address:
a wildcard such as 0.0.0.0 is refused, since the Host rule below needs the address the browser
uses), on a free port unless ``port`` is given. A random token (``secrets.token_urlsafe``, 32
bytes) is in the printed URL. A request is refused with 403 unless all of these hold:

- it carries the token: query ``?token=...`` or header ``X-Deltacd-Token`` (compared in constant time);
- its ``Host`` header is the bound ``host:port`` exactly (a DNS-rebinding page names another host);
- its ``Origin`` header, when there is one, is the server's own ``http://host:port`` (``null`` is refused);
- its ``Sec-Fetch-Site`` header, when there is one, is ``same-origin`` or ``none``.

Answers are POSTed as JSON (``Content-Type: application/json``, at most 64 KiB), every response
says ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer`` and forbids framing, and the
files served are the web map's own, read into memory at start: nothing else of the disk is reachable.

Routes (all with the token): ``/`` the page; its files; ``GET api/state`` (kind, answers, counts,
overlay bounds); ``GET api/object?lat=&lng=`` (the object under a point); ``GET api/next`` (the
next suggestion); ``POST api/answer`` ``{"object_id": ID, "answer": VALUE or null to skip}``
(returns the counts, the overlay's version and the next suggestion); ``GET api/overlay.png?v=``.
A skipped object is not stored: it is left out of the suggestions while the server runs.

:meth:`ReviewServer.serve` returns on Ctrl+C or SIGTERM once an answer being written is saved, and
removes the temporary page; a killed server's page is removed by the next server that starts.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
import rasterio
import shapely
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as transform_points

from deltacd.errors import DeltacdError, InputError
from deltacd.io.grid import Grid
from deltacd.report.webmap import latlng_bounds, web_grid, write_webmap
from deltacd.review.classifier import make_classifier
from deltacd.review.session import ReviewSession

log = logging.getLogger(__name__)

#: Header that may carry the token instead of the query.
TOKEN_HEADER = "X-Deltacd-Token"
#: Longer side of the web map's images (px), as in ``deltacd report``.
MAP_SIZE = 2048
#: Longer side of the overlay that shows the objects' state (px): light to redraw on every answer.
OVERLAY_SIZE = 1024
#: Name of a server's temporary page folder (then its process id): a killed server's is removed by the next one.
PAGE_PREFIX = "deltacd-review-"
#: Largest request body accepted (bytes).
MAX_BODY = 65536
WGS84 = CRS.from_epsg(4326)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
}
_DETECT_CLASSES = [{"value": 1, "label": "change", "key": "c"}, {"value": 0, "label": "no change", "key": "n"}]
#: Opacity (0-255) of an object's red against its P(change): clear below 0.25, faint up to the decision (0.5),
#: then strong: the map shows what a refine would map as change.
CHANGE_ALPHA = ((0.0, 0.25, 0.4999, 0.5, 1.0), (0, 0, 70, 140, 220))
_CHANGE_RGB = (215, 25, 28)
_NO_CHANGE_RGB = (26, 150, 65)


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


class _Overlay:
    """The objects' state as a PNG on the map's Web Mercator grid: a raster of table rows (-1: none) made once,
    coloured by a look-up table on every answer."""

    def __init__(self, session: ReviewSession, max_size: int = OVERLAY_SIZE):
        run, table = session.run, session.table
        self.grid: Grid = web_grid(run.grid, min(max_size, max(run.grid.width, run.grid.height)))
        if run.kind == "damage":
            from rasterio.features import rasterize

            buildings = run.buildings().to_crs(self.grid.crs)
            keep = np.isin(buildings.index.to_numpy(dtype=np.int64), table.ids)
            rows = table.rows(buildings.index.to_numpy(dtype=np.int64)[keep])
            shapes = zip(buildings.geometry[keep], rows.tolist(), strict=True)
            self.rows = rasterize(shapes, out_shape=self.grid.shape, transform=self.grid.transform, fill=-1,
                                  dtype="int32") if keep.any() else np.full(self.grid.shape, -1, dtype=np.int32)
        else:
            with rasterio.open(run.labels) as src, WarpedVRT(
                    src, crs=self.grid.crs, transform=self.grid.transform, width=self.grid.width,
                    height=self.grid.height, resampling=Resampling.nearest, src_nodata=-1, nodata=-1) as vrt:
                ids = vrt.read(1).astype(np.int64)
            rows = np.searchsorted(table.ids, ids).clip(0, len(table) - 1)
            found = (ids >= 0) & (table.ids[rows] == ids)
            self.rows = np.where(found, rows, -1).astype(np.int32)
        self.bounds = latlng_bounds(self.grid)

    def png(self, colours: np.ndarray) -> bytes:
        """The overlay with ``colours`` [n, 4] uint8 (RGBA per table row)."""
        lut = np.vstack([colours, np.zeros((1, 4), dtype=np.uint8)])  # row -1: transparent
        buffer = io.BytesIO()
        Image.fromarray(lut[self.rows], mode="RGBA").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


class ReviewServer:
    """The review server of one run (module notes): bound at construction, serving from :meth:`serve`.

    Parameters
    ----------
    run_dir
        A detect or damage run folder (its objects and features are made on first use, as by
        :func:`~deltacd.review.refine.suggest`).
    host, port
        Where to listen: 127.0.0.1 and a free port by default.
    reviewer
        Recorded with every answer.

    Raises
    ------
    DeltacdError
        Not a run, a wildcard or unknown host, a port in use (one line).
    """

    def __init__(self, run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, reviewer: str = "",
                 seed: int = 0, embeddings: str | None = None):
        host = _check_host(host)
        if not 0 <= int(port) <= 65535:
            raise InputError(f"--port {port}: give a port between 1 and 65535, or leave it out for a free one")
        self.session = ReviewSession(run_dir, reviewer=reviewer, seed=seed, embeddings=embeddings)
        make_classifier()  # scikit-learn imported now, not on the analyst's first answers
        self.lock = threading.Lock()
        self.token = secrets.token_urlsafe(32)
        self.skipped: set[int] = set()
        self.version = 0
        self.closed = False
        self._values: tuple[int, np.ndarray] | None = None
        self._png: tuple[int, bytes] | None = None
        _remove_stale_pages()
        self._folder = tempfile.TemporaryDirectory(prefix=f"{PAGE_PREFIX}{os.getpid()}-")
        httpd = None
        try:
            httpd = _bind(host, int(port), self)  # first: a port in use is said at once (nothing is served yet)
            self._files = self._build_page()
            self.overlay = _Overlay(self.session)
        except BaseException:
            if httpd is not None:
                httpd.server_close()
            self._folder.cleanup()
            self.session.close()
            raise
        self.httpd = httpd
        self.host = host
        self.port = int(self.httpd.server_address[1])
        name = f"[{host}]" if ":" in host else host
        self.authority = f"{name}:{self.port}".lower()
        self.origin = f"http://{self.authority}"

    @property
    def url(self) -> str:
        """The page, with the token."""
        return f"{self.origin}/?token={self.token}"

    @property
    def store(self) -> Path:
        return self.session.store.path

    # --- the page --------------------------------------------------------------------------------

    def _build_page(self) -> dict[str, bytes]:
        run = self.session.run
        root = Path(self._folder.name)
        size = min(MAP_SIZE, max(run.grid.width, run.grid.height))  # a small scene is not blown up
        write_webmap({run.kind: run.folder}, root, title=f"review: {run.folder.name}", max_size=size, review=True)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return files

    def file(self, name: str) -> tuple[bytes, str] | None:
        """A file of the page (with the token added to the URLs it names), and its content type; None if not one."""
        name = name or "index.html"
        if name not in self._files:
            return None
        content = self._files[name]
        query = f"?token={self.token}"
        if name == "index.html":
            content = re.sub(rb'(src|href)="(?!data:|[a-z]+://|#)([^"?]+)"',
                             lambda m: m.group(1) + b'="' + m.group(2) + query.encode() + b'"', content)
        elif name.endswith(".css"):
            content = re.sub(rb"url\((['\"]?)(images/[^'\")?]+)\1\)",
                             lambda m: b"url(" + m.group(1) + m.group(2) + query.encode() + m.group(1) + b")", content)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return content, kind

    # --- the session, one request at a time -------------------------------------------------------

    def _state_values(self) -> np.ndarray:
        """P(change) (detect) or the grade (damage) of every object, for this version of the classifier."""
        if self._values is None or self._values[0] != self.version:
            s = self.session
            values = s.grades().astype(float) if s.run.kind == "damage" else s.change_probability()
            self._values = (self.version, values)
        return self._values[1]

    def _describe(self, object_id: int | None) -> dict[str, Any] | None:
        if object_id is None:
            return None
        s = self.session
        row = int(s.table.rows([object_id])[0])
        value = float(self._state_values()[row])
        if s.run.kind == "damage":
            from deltacd.outputs.grades import GRADE_LABELS

            shown = f"grade {int(value)} ({GRADE_LABELS.get(int(value), 'unclassified')})"
        else:
            shown = f"P(change) {value:.2f}"
        outline = s.outlines([object_id]).to_crs(WGS84)
        geometry = shapely.geometry.mapping(outline.geometry.iloc[0]) if len(outline) else None
        return {"object_id": int(object_id), "answer": s.answers.get(int(object_id)), "shown": shown,
                "geometry": geometry}

    def _next(self) -> dict[str, Any] | None:
        ids = self.session.next(1, skip=self.skipped)["object_id"].tolist()
        return self._describe(int(ids[0])) if ids else None

    def state(self) -> dict[str, Any]:
        with self.lock:
            s = self.session
            if s.run.kind == "damage":
                from deltacd.outputs.grades import GRADE_LABELS

                classes = [{"value": g, "label": GRADE_LABELS[g], "key": str(g)} for g in s.run.classes]
                legend = "overlay: each building's grade, the classifier's once it can be trained; solid: reviewed"
                label = "review: damage grade"
            else:
                classes = _DETECT_CLASSES
                legend = ("overlay: strong red, P(change) at least 0.5 (a refine maps it as change); faint red, 0.25-0.5; "
                          "solid red / green: reviewed change / no change")
                label = "review: P(change)"
            return {"kind": s.run.kind, "classes": classes, "counts": s.counts(), "version": self.version,
                    "legend": legend, "reviewer": s.reviewer, "overlay": {"bounds": self.overlay.bounds, "label": label}}

    def object_at(self, lat: float, lng: float) -> dict[str, Any] | None:
        with self.lock:
            xs, ys = transform_points(WGS84, self.session.run.grid.crs, [lng], [lat])
            return self._describe(self.session.object_at(xs[0], ys[0]))

    def next(self) -> dict[str, Any] | None:
        with self.lock:
            return self._next()

    def answer(self, object_id: int, answer: int | None) -> dict[str, Any]:
        """Store ``answer`` about ``object_id`` (None: skip it), retrain; the counts, version and next suggestion."""
        with self.lock:
            if answer is None:
                self.skipped.add(int(object_id))
            else:
                self.session.answer(int(object_id), int(answer))
                self.skipped.discard(int(object_id))
                self.version += 1
            return {"counts": self.session.counts(), "version": self.version, "next": self._next()}

    def overlay_png(self) -> bytes:
        with self.lock:
            if self._png is None or self._png[0] != self.version:
                self._png = (self.version, self.overlay.png(self._colours(self._state_values())))
            return self._png[1]

    def _colours(self, values: np.ndarray) -> np.ndarray:
        s = self.session
        colours = np.zeros((len(values), 4), dtype=np.uint8)
        reviewed = s.table.rows(list(s.answers)) if s.answers else np.empty(0, dtype=np.int64)
        if s.run.kind == "damage":
            from deltacd.outputs.grades import GRADE_COLOURS

            grades = values.astype(int)
            for grade, colour in GRADE_COLOURS.items():
                colours[grades == grade] = (*_rgb(colour), 60 if grade == 0 else 170)
            colours[grades < 0] = (150, 150, 150, 110)
            colours[reviewed, 3] = 235
            return colours
        colours[:, :3] = _CHANGE_RGB
        colours[:, 3] = np.round(np.interp(np.nan_to_num(values), CHANGE_ALPHA[0], CHANGE_ALPHA[1])).astype(np.uint8)
        said = np.array(list(s.answers.values()), dtype=int)
        colours[reviewed[said == 1]] = (*_CHANGE_RGB, 235)
        colours[reviewed[said == 0]] = (*_NO_CHANGE_RGB, 110)
        return colours

    # --- running ---------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until Ctrl+C or SIGTERM (a KeyboardInterrupt in the main thread), then close; returns normally."""
        try:
            self.httpd.serve_forever(poll_interval=0.25)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening, let an answer being written finish, drop the page's temporary folder."""
        self.httpd.server_close()
        if self.lock.acquire(timeout=30):
            self.closed = True  # a kept-alive connection's next request gets 503
            self.lock.release()
        self.session.close()
        self._folder.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_stale_pages() -> None:
    """Remove the temporary pages that killed servers left behind (their process is gone)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PAGE_PREFIX}*-*"):
        pid = folder.name.removeprefix(PAGE_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, or another user's


def _check_host(host: str) -> str:
    host = host.strip().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not host or not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise InputError(f"--host {host!r}: give an address such as 127.0.0.1 or a host name") from None
        return host
    if address.is_unspecified:
        raise InputError(f"--host {host}: a wildcard address cannot be checked against the browser's Host header; "
                         "give the address the browser will use (127.0.0.1, or this machine's address on the network)")
    return host


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    review: ReviewServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _bind(host: str, port: int, review: ReviewServer) -> _HTTPServer:
    cls = _HTTPServer6 if ":" in host else _HTTPServer
    try:
        httpd = cls((host, port), _Handler)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: unknown host ({exc.strerror}); give an address such as 127.0.0.1") from exc
    except OSError as exc:
        what = f"port {port}" if port else "a free port"
        raise InputError(f"--host {host} --port {port}: cannot listen on {what} ({exc.strerror}); "
                         "choose another port, or leave --port out for a free one") from exc
    httpd.review = review
    return httpd


class _Refused(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "deltacd-review"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code="-", size="-") -> None:
        path = urlsplit(self.path).path  # never the query: it holds the token
        log.debug("%s %s %s", self.command, path, code)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _check(self, query: dict[str, list[str]]) -> None:
        review = self.server.review
        host = (self.headers.get("Host") or "").strip().lower()
        if host != review.authority:
            raise _Refused(f"Host {host or '(none)'} is not this server's {review.authority}")
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() != review.origin:
            raise _Refused(f"Origin {origin} is not this server's")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            raise _Refused(f"a {site} request")
        given = self.headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), review.token.encode()):
            raise _Refused("no valid token; open the URL deltacd review printed")

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        try:
            self._check(query)
        except _Refused as exc:
            self.close_connection = True
            self._text(HTTPStatus.FORBIDDEN, f"forbidden: {exc}")
            return
        review = self.server.review
        if review.closed:
            self.close_connection = True
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, "the review server has stopped")
            return
        path = parts.path.lstrip("/")
        try:
            if self.command == "POST":
                if path != "api/answer":
                    self._text(HTTPStatus.METHOD_NOT_ALLOWED, "POST only to api/answer")
                    return
                self._json(self._post_answer(review))
            elif path == "api/state":
                self._json(review.state())
            elif path == "api/object":
                lat, lng = float(query["lat"][0]), float(query["lng"][0])
                self._json({"object": review.object_at(lat, lng)})
            elif path == "api/next":
                self._json({"object": review.next()})
            elif path == "api/overlay.png":
                self._send(HTTPStatus.OK, review.overlay_png(), "image/png")
            else:
                found = review.file(path)
                if found is None:
                    self._text(HTTPStatus.NOT_FOUND, "not found")
                else:
                    self._send(HTTPStatus.OK, *found)
        except DeltacdError as exc:
            self.close_connection = True  # a body left unread must not be taken for the next request
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            self.close_connection = True
            self._json({"error": f"bad request ({exc!r})"}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("review server: %s %s failed", self.command, parts.path)
            self._json({"error": "internal error (run with -v for the traceback)"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _post_answer(self, review: ReviewServer) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise InputError("answers are sent as application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            raise InputError(f"a body of {length} bytes: send one answer, at most {MAX_BODY} bytes")
        body = json.loads(self.rfile.read(length))
        answer = body.get("answer")
        return review.answer(int(body["object_id"]), None if answer is None else int(answer))


__all__ = ["OVERLAY_SIZE", "TOKEN_HEADER", "ReviewServer"]
