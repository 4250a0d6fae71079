"""``deltacd review`` and ``deltacd refine``: who may talk to the server, the review mode in a real browser, a
server killed mid-answer, Ctrl+C, and the QGIS loop on the command line."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image

import deltacd
from conftest import CHROMIUM, launch_chromium, needs, textured_scene, watched_page, write_geotiff
from deltacd.cli import main

pytest.importorskip("sklearn")

ROOF = (40, 40, 40, 40)  # row, col, height, width of a new roof in date 2
SHADE = (150, 150, 40, 50)  # the same ground, darker


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("review_server")
    before = textured_scene((256, 256), 4, seed=5)
    after = before.astype(np.float64)
    r, c, h, w = ROOF
    after[:, r:r + h, c:c + w] = 2600
    r, c, h, w = SHADE
    after[:, r:r + h, c:c + w] *= 0.5
    b = write_geotiff(folder / "before.tif", before)
    a = write_geotiff(folder / "after.tif", np.clip(after, 0, 4095).astype("uint16"))
    deltacd.detect(b, a, folder / "run", bands_before="B,G,R,N", bands_after="B,G,R,N")
    return folder / "run"


class Server:
    """``deltacd review RUN`` in a child process, and its URL."""

    def __init__(self, run: Path, *args: str, tmp: Path | None = None, background: bool = False):
        env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None  # where a killed server's page stays behind
        env = {**(env or os.environ), "PYTHONFAULTHANDLER": "1"}  # a hung server dumps its threads on SIGABRT (stop)
        # background: started as a shell's background job is, with SIGINT ignored (inherited by its children)
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
        self.process = subprocess.Popen([sys.executable, "-m", "deltacd", "review", str(run), *args], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
        timer = threading.Timer(90, self.process.kill)  # a server that never comes up fails the test, not the run
        timer.start()
        self.first_line = self.process.stdout.readline()
        timer.cancel()
        assert "open http://127.0.0.1:" in self.first_line, self.first_line + self.process.stderr.read()
        self.url = self.first_line.split("open ", 1)[1].split(" ", 1)[0]
        self.base, self.token = self.url.split("/?token=")

    def request(self, path: str, *, token: bool = True, headers: dict | None = None, body: dict | None = None):
        """(status, body bytes) of a request with the token in the header (or none)."""
        headers = dict(headers or {})
        if token:
            headers["X-Deltacd-Token"] = self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(urllib.request.Request(self.base + path, data=data, headers=headers),
                                        timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            out, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hangs: every thread's stack, from faulthandler
            self.process.send_signal(signal.SIGABRT)
            out, err = self.process.communicate(timeout=30)
            pytest.fail(f"the server did not stop within 30 s of {signal.Signals(signum).name}; its threads:\n{err[-6000:]}")
        return self.process.returncode, self.first_line + out, err


@pytest.fixture(scope="module")
def server(run_dir):
    started = Server(run_dir, "--reviewer", "web-test")
    yield started
    started.stop(signal.SIGTERM)  # so that it removes its temporary page


def test_the_server_refuses_requests_without_the_token_or_from_elsewhere(server, run_dir):
    assert server.request("/", token=False)[0] == 403
    assert server.request("/api/state", token=False)[0] == 403
    assert server.request(f"/api/state?token={server.token[:-1]}x", token=False)[0] == 403
    assert server.request(f"/api/state?token={server.token}", token=False)[0] == 200  # in the query
    status, body = server.request("/api/state")  # in the header
    assert status == 200 and json.loads(body)["kind"] == "detect"
    # a page elsewhere (a foreign Origin, a DNS-rebinding Host, a cross-site fetch) gets nothing, even with the token
    assert server.request("/api/state", headers={"Origin": "http://evil.example"})[0] == 403
    assert server.request("/api/state", headers={"Origin": "null"})[0] == 403
    assert server.request("/api/state", headers={"Host": "evil.example"})[0] == 403
    assert server.request("/api/state", headers={"Host": "localhost:" + server.base.rsplit(":", 1)[1]})[0] == 403
    assert server.request("/api/state", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    status, body = server.request("/api/answer", body={"object_id": 1, "answer": 1},
                                  headers={"Origin": "http://evil.example"})
    assert status == 403 and not (run_dir / "review.gpkg").exists()
    assert server.request("/api/state", headers={"Origin": server.base})[0] == 200  # its own page
    assert server.request("/../run.json")[0] == 404 and server.request("/run.json")[0] == 404  # only the page's files
    assert server.request("/api/answer", body={"object_id": 1, "answer": 7})[0] == 400


def _overlay(server: Server) -> np.ndarray:
    status, body = server.request("/api/overlay.png")
    assert status == 200
    return np.asarray(Image.open(io.BytesIO(body)))


@pytest.mark.slow
@needs("playwright")
@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"needs Chromium at {CHROMIUM}")
def test_three_answers_in_the_browser_survive_a_reload_and_recolour_the_map(server, run_dir):
    from playwright.sync_api import sync_playwright

    before = _overlay(server)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page, errors, requests = watched_page(browser, 1000, 750)
        page.goto(server.url)
        page.wait_for_selector("#review[data-ready='1']", timeout=20000)
        reviewed = page.locator("#review-reviewed")
        assert reviewed.inner_text() == "0" and page.locator(".review-overlay").count() == 1
        # 1: the next object, answered with the keyboard: change
        page.click("#review-next")
        page.wait_for_selector("#review-id")
        page.keyboard.press("c")
        page.wait_for_selector("#review[data-reviewed='1']")
        # 2: the object suggested after it (selected at once): no change, with its button
        page.click("button[data-answer='0']")
        page.wait_for_selector("#review[data-reviewed='2']")
        # 3: an object clicked on the map, one not reviewed yet: no change, with the keyboard
        box = page.locator("#map").bounding_box()
        for fx, fy in ((0.5, 0.45), (0.3, 0.3), (0.7, 0.3), (0.6, 0.6)):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(400)
            if "not reviewed" in page.locator("#review-object").inner_text():
                break
        page.keyboard.press("n")
        page.wait_for_selector("#review[data-reviewed='3']")
        assert page.locator("#review").get_attribute("data-version") == "3"
        assert "v=3" in page.locator(".review-overlay").get_attribute("src")
        # a reload: the answers are still there
        page.reload()
        page.wait_for_selector("#review[data-ready='1']", timeout=20000)
        assert reviewed.inner_text() == "3"
        assert "3 reviewed (1 change, 2 no change)" in page.locator("#review-counts").inner_text()
        browser.close()
    assert errors == []
    assert all(url.startswith((server.base + "/", "data:")) for url in requests)  # nothing else
    after = _overlay(server)
    assert before.shape == after.shape and np.abs(before.astype(int) - after.astype(int)).sum() > 0  # recoloured
    answers = gpd.read_file(run_dir / "review.gpkg", layer="answers")
    assert sorted(answers["answer"]) == [0, 0, 1] and set(answers["reviewer"]) == {"web-test"}
    assert set(answers["source"]) == {"web"} and answers.geometry.notna().all()


@pytest.mark.parametrize(("signum", "background"), [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["ctrl-c", "sigterm", "sigint-to-a-background-job"])
def test_ctrl_c_and_sigterm_stop_the_server_cleanly(run_dir, signum, background):
    server = Server(run_dir, background=background)
    assert server.request("/api/state")[0] == 200
    code, out, err = server.stop(signum)
    assert code == 0, err
    assert out.count("\n") == 2 and out.splitlines()[-1].startswith("review server stopped;"), out
    assert "Traceback" not in err


def test_a_server_killed_with_sigkill_leaves_a_valid_store(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("review.gpkg"))  # the objects' cache comes along
    (tmp_path / "tmp").mkdir()
    child = Server(run, tmp=tmp_path / "tmp")
    acked: list[int] = []

    def answer() -> None:
        _, body = child.request("/api/next")
        current = json.loads(body)["object"]["object_id"]
        try:
            while True:
                status, body = child.request("/api/answer", body={"object_id": current, "answer": len(acked) % 2})
                assert status == 200
                acked.append(current)
                current = json.loads(body)["next"]["object_id"]
        except (OSError, urllib.error.URLError):
            return  # the server is gone

    writer = threading.Thread(target=answer)
    writer.start()
    deadline = time.time() + 60
    while len(acked) < 6 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(child.process.pid, signal.SIGKILL)  # most likely while an answer is being trained or written
    child.process.wait()
    writer.join(30)
    assert len(list((tmp_path / "tmp").glob("deltacd-review-*"))) == 1  # its page: removed by the next server
    store = run / "review.gpkg"
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert pyogrio.read_info(store, layer="answers")["geometry_type"] == "MultiPolygon"
    answers = gpd.read_file(store, layer="answers")
    assert len(acked) >= 6 and len(acked) <= len(answers) <= len(acked) + 1  # at most the one being written is lost
    assert set(acked) <= set(answers["object_id"])


def test_the_qgis_loop_on_the_command_line(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("review.gpkg"))
    suggestions = tmp_path / "next.gpkg"
    assert main(["review", str(run), "--suggest", "6", "-o", str(suggestions), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and str(suggestions) in out
    frame = gpd.read_file(suggestions, layer="suggestions")
    assert len(frame) == 6 and frame["label"].isna().all()
    # the analyst fills in label (the roof is a change, anything else is not), plus two points of their own
    with rasterio.open(run / "change_mask.tif") as src:
        transform, crs = src.transform, src.crs
    r, c, h, w = ROOF
    roof = shapely.box(*(transform * (c, r + h)), *(transform * (c + w, r)))
    frame["label"] = [int(g.intersection(roof).area > 0.5 * g.area) for g in frame.geometry]
    frame.to_file(suggestions, layer="suggestions")
    sr, sc, sh, sw = SHADE
    points = gpd.GeoDataFrame({"label": [1, 0]}, crs=crs, geometry=[
        shapely.Point(*(transform * (c + w / 2, r + h / 2))), shapely.Point(*(transform * (sc + sw / 2, sr + sh / 2)))])
    points.to_crs("EPSG:4326").to_file(tmp_path / "points.gpkg")
    code = main(["refine", str(run), "--labels", str(suggestions), str(tmp_path / "points.gpkg"), "-o",
                 str(tmp_path / "refined"), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 1, out
    record = json.loads((tmp_path / "refined" / "run.json").read_text())
    reviewed = record["review"]["objects_reviewed"]
    assert 7 <= reviewed <= 8 and out.startswith(f"refined from {reviewed} reviewed objects, ")
    assert "accuracy" in out and str(tmp_path / "refined") in out
    assert (tmp_path / "refined" / "change_mask.tif").is_file() and (tmp_path / "refined" / "changes.gpkg").is_file()
    # -o without --suggest: one line, exit 1
    assert main(["review", str(run), "-o", str(tmp_path / "x.gpkg")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "goes with --suggest" in err


def test_a_damage_run_is_reviewed_by_grade(tmp_path):
    from deltacd.damage import damage
    from deltacd.errors import InputError
    from deltacd.review.server import ReviewServer

    before = textured_scene((128, 128), 4, seed=9)
    after = before.copy()
    after[:, 10:50, 10:50] = np.random.default_rng(4).integers(200, 3500, size=(4, 40, 40))
    b, a = write_geotiff(tmp_path / "pre.tif", before), write_geotiff(tmp_path / "post.tif", after)
    boxes = [(10, 10), (10, 70), (70, 10), (70, 70)]
    gpd.GeoDataFrame({"ref": range(4)}, crs="EPSG:2154", geometry=[
        shapely.box(574000 + c * 0.5, 6280000 - (r + 40) * 0.5, 574000 + (c + 40) * 0.5, 6280000 - r * 0.5)
        for r, c in boxes]).to_file(tmp_path / "bati.gpkg")
    run = damage(b, a, tmp_path / "run", buildings=tmp_path / "bati.gpkg", coregistration="off").out_dir
    with pytest.raises(InputError, match="wildcard"):
        ReviewServer(run, host="0.0.0.0")
    server = ReviewServer(run, reviewer="grader")
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        client = Server.__new__(Server)
        client.base, client.token = server.url.split("/?token=")
        with pytest.raises(InputError, match="cannot listen"):
            ReviewServer(run, port=server.port)  # the port is taken
        state = json.loads(client.request("/api/state")[1])
        assert state["kind"] == "damage" and [c["key"] for c in state["classes"]] == ["0", "1", "2", "3"]
        lat = (state["overlay"]["bounds"][0][0] * 0.75 + state["overlay"]["bounds"][1][0] * 0.25)
        lng = (state["overlay"]["bounds"][0][1] * 0.25 + state["overlay"]["bounds"][1][1] * 0.75)
        hit = json.loads(client.request(f"/api/object?lat={lat}&lng={lng}")[1])["object"]  # the building at (70, 70)
        assert hit is not None and hit["shown"].startswith("grade ")
        status, body = client.request("/api/answer", body={"object_id": hit["object_id"], "answer": 3})
        assert status == 200 and json.loads(body)["counts"]["3"] == 1
        assert client.request("/api/answer", body={"object_id": hit["object_id"], "answer": 4})[0] == 400
        assert _overlay(client).shape[2] == 4
    finally:
        server.httpd.shutdown()
        thread.join()
        server.close()
    answers = gpd.read_file(run / "review.gpkg", layer="answers")
    assert list(answers["answer"]) == [3] and list(answers["reviewer"]) == ["grader"]
    assert answers.geometry.iloc[0].intersects(shapely.box(574035, 6279945, 574055, 6279965))
