"""The upload page of ``multitask-mx serve`` in headless Chromium, driven over the DevTools protocol.

Debian's ``chromium`` (installed by .ci/run) runs with a fresh profile and
``--remote-debugging-port=0``; the test talks to the page over a websocket: it opens
the page, sets the file input to an image (what a person's file dialog does), and
waits for one bar chart per task with the class names and percentages the server sent.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from test_serve import ServerProcess, post_image, train_tiny_model

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH or at /usr/bin/chromium: install Debian's "
                                                "with `apt-get install -y --no-install-recommends chromium` "
                                                "(.ci/run does)"),
]
websocket = pytest.importorskip("websocket", reason="websocket-client is missing: pip install -c constraints.txt "
                                                    "-e '.[test]'")


class DevTools:
    """A minimal DevTools protocol client on one page target; events are kept in ``events``."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError("%s: %s" % (method, message["error"]))
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression, timeout=60):
        """Poll until the expression is truthy; returns its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s; page text:\n%s"
                             % (expression, self.evaluate("document.body.innerText")))

    def close(self):
        """Close the websocket."""
        self.ws.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """This module's tiny model behind a server on loopback."""
    base = tmp_path_factory.mktemp("browser")
    save, root = train_tiny_model(base)
    logs = base / "server_logs"
    logs.mkdir()
    server = ServerProcess(save, str(logs))
    yield {"server": server, "root": root, "base": base}
    server.stop()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A headless Chromium page (fresh profile), closed at the end."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = open(str(profile) + ".log", "w")
    proc = subprocess.Popen([CHROMIUM] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile, "about:blank"],
                            stdout=log, stderr=log)
    port_file = profile / "DevToolsActivePort"
    deadline = time.time() + 90
    while not (port_file.exists() and port_file.read_text().count("\n") >= 1) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    try:
        port = int(port_file.read_text().splitlines()[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=30))
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    except Exception:
        proc.kill()
        log.close()
        raise AssertionError("chromium did not start:\n" + open(str(profile) + ".log").read()[-4000:])
    tools = DevTools(ws_url)
    tools.call("Page.enable")
    tools.call("Network.enable")
    yield tools
    tools.close()
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def choose_file(page, path):
    """Set the page's file input to ``path``, as the file dialog does (fires 'change')."""
    root = page.call("DOM.getDocument")["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="#image")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[path], nodeId=node)


def open_page(page, url):
    """Navigate to the upload page and wait until it has described the model."""
    page.call("Page.navigate", url=url)
    page.wait_for("document.readyState === 'complete' && document.getElementById('model').textContent"
                  ".includes('epoch')")


def test_upload_shows_the_image_and_a_bar_chart_per_task(page, served):
    server = served["server"]
    image = os.path.join(served["root"], "square", "square_1_002.jpg")
    expected = post_image(server.url, open(image, "rb").read())[2]["tasks"]
    open_page(page, server.url)
    choose_file(page, image)
    assert page.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"
                         ) == "done", page.evaluate("document.getElementById('status').textContent")

    assert page.evaluate("document.getElementById('picture').naturalWidth") == 32  # the chosen image is shown
    assert "square_1_002.jpg" in page.evaluate("document.getElementById('filename').textContent")
    charts = page.evaluate("""Array.from(document.querySelectorAll('.task')).map(t => ({
        task: t.querySelector('h2').textContent,
        rows: Array.from(t.querySelectorAll('.row')).map(r => [r.querySelector('.name').textContent,
              r.querySelector('.pct').textContent, r.querySelector('.bar').getBoundingClientRect().width,
              r.querySelector('.track').getBoundingClientRect().width])}))""")
    assert [c["task"] for c in charts] == ["label", "label_gt0"]
    for chart in charts:
        want = expected[chart["task"]]
        assert [r[0] for r in chart["rows"]] == [c["class"] for c in want]
        assert [r[1] for r in chart["rows"]] == ["%.1f%%" % (100 * c["prob"]) for c in want]
        for (_, _, bar, track), c in zip(chart["rows"], want):
            assert bar == pytest.approx(max(1.0, track * c["prob"]), abs=1.5)  # the bar's length is the probability
    text = page.evaluate("document.getElementById('results').innerText")
    assert re.search(r"\d+\.\d%", text) and "label_gt0" in text

    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    (served["base"] / "upload_page.png").write_bytes(shot)  # for a person to look at
    assert shot.startswith(b"\x89PNG") and len(shot) > 1000
    requested = [e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(server.url) or u.startswith(("blob:", "data:")) for u in requested), \
        requested  # nothing is fetched from anywhere but the server


def test_a_file_that_is_not_an_image_shows_the_error(page, served, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture at all")
    open_page(page, served["server"].url)
    choose_file(page, str(notes))
    assert page.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"
                         ) == "error"
    status = page.evaluate("document.getElementById('status').textContent")
    assert status.startswith("error:") and "not an image" in status
    assert page.evaluate("document.querySelectorAll('.task').length") == 0
