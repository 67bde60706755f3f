"""codapi's own widget (`@antonz/codapi`) in a real headless browser against the
whole stack: the API on waitress, the runner, dockerd and the fixture nixpkgs,
with the fixture catalog's bash as codapi sandbox `bash`.

The page is served on another loopback port than the API, so it is another
origin and every run goes through CORS (a preflight, then the POST) as it does
for a documentation site; chromium-headless-shell runs it, driven by
puppeteer-core from tests/compat/clients/codapi_widget.mjs, which aborts any
request that would leave loopback."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_helpers import start_compat_stack
from e2e_stack import Stack, our_containers

POOL_SIZE = 2

pytestmark = [pytest.mark.docker, pytest.mark.nix]

CLIENTS = Path(__file__).resolve().parent / "clients"
WIDGET = CLIENTS / "node_modules" / "@antonz" / "codapi" / "dist"
DRIVER = CLIENTS / "codapi_widget.mjs"
PAGE = CLIENTS / "codapi_widget.html"
BOOTSTRAP = "run `scripts/bootstrap node`"
ADMIN = "codapi-widget-admin"


def headless_shell() -> str:
    """The browser binary of Debian's chromium-headless-shell package."""
    listed = subprocess.run(["dpkg", "-L", "chromium-headless-shell"], capture_output=True,
                            text=True, check=False)
    if listed.returncode != 0:
        pytest.fail(f"chromium-headless-shell is not installed: {BOOTSTRAP}")
    binaries = [Path(line) for line in listed.stdout.splitlines()
                if line.endswith("/chromium-headless-shell")]
    # The ELF itself, not /usr/bin's wrapper script: closing the browser
    # must end the browser.
    found = [path for path in binaries if path.is_file() and "/bin/" not in str(path)]
    if not found:
        pytest.fail(f"chromium-headless-shell has no browser binary: {BOOTSTRAP}")
    return str(found[0])


def node() -> str:
    found = shutil.which("node")
    if found is None or not (WIDGET / "snippet.js").exists() or not (
            CLIENTS / "node_modules" / "puppeteer-core").exists():
        pytest.fail(f"node, @antonz/codapi or puppeteer-core is missing: {BOOTSTRAP}")
    return found


@dataclass
class PageServer:
    """The documentation page with the widget, served on a loopback port."""

    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def serve_page(codapi_url: list[str]) -> PageServer:
    """Serve the page (with `codapi_url[0]`, filled in once the API's address
    is known) and the widget's own files from node_modules."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            files = {"/": (PAGE, "text/html; charset=utf-8"),
                     "/snippet.js": (WIDGET / "snippet.js", "text/javascript"),
                     "/snippet.css": (WIDGET / "snippet.css", "text/css")}
            if self.path not in files:
                self.send_error(404)
                return
            path, content_type = files[self.path]
            body = path.read_bytes()
            if self.path == "/":
                body = body.replace(b"__CODAPI_URL__", codapi_url[0].encode())
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return PageServer(server, thread)


@dataclass
class WidgetSetup:
    stack: Stack
    page: PageServer
    elsewhere: PageServer
    browser: str
    node: str


@pytest.fixture(scope="module")
def widget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WidgetSetup]:
    browser, node_binary = headless_shell(), node()
    codapi_url: list[str] = [""]
    page, elsewhere = serve_page(codapi_url), serve_page(codapi_url)
    compat = f"""
[compat.codapi]
enabled = true
anonymous = true
allowed_origins = ["{page.origin}"]
"""
    try:
        # With a warm pool, as `nixjail serve` and the module run the runner:
        # the widget gives up after 10 s, and a container's start on a loaded
        # machine can take much of that.
        for stack in start_compat_stack(tmp_path_factory.mktemp("codapi"), compat,
                                        runner_settings=f"pool_size = {POOL_SIZE}"):
            codapi_url[0] = f"{stack.url}/codapi/v1"
            yield WidgetSetup(stack, page, elsewhere, browser, node_binary)
    finally:
        page.stop()
        elsewhere.stop()


def drive(setup: WidgetSetup, page: PageServer, snippets: list[str]) -> dict[str, Any]:
    config = {"browser": setup.browser, "page": page.origin + "/", "snippets": snippets,
              "timeout_ms": 30_000}
    done = subprocess.run([setup.node, str(DRIVER), json.dumps(config)], cwd=CLIENTS,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["offsite"] == [], result["offsite"]
    return result


def warm(stack: Stack) -> None:
    """Build the bash environment once, as the cache builder's catalog build
    does at a service's start (this stack runs none), so the widget's first
    run finds it built, and let the pool fill with its containers."""
    submission = stack.submit(shell_nix=None, environment="bash",
                              files={"main.sh": "true"})
    assert submission["status"] == "done", submission
    deadline = time.monotonic() + 60
    while len(our_containers(stack.runner_name, warm=True)) < POOL_SIZE:
        assert time.monotonic() < deadline, "the warm pool did not fill within 60 s"
        time.sleep(0.05)  # another process's state: looked at until it holds


def test_the_widget_runs_bash_and_shows_the_output(widget: WidgetSetup) -> None:
    warm(widget.stack)
    result = drive(widget, widget.page, ["hello", "fails", "files", "unknown"])
    snippets = result["snippets"]
    hello = snippets["hello"]
    assert hello["request"]["sandbox"] == "bash" and hello["request"]["command"] == "run"
    assert hello["output"] == "hello from nixjail: 42\n", (hello, result["console"])
    assert hello["state"] == "succeded" and hello["status"].startswith("✓ Done")
    # A nonzero exit is ok: false; with no stdout the widget shows stderr.
    fails = snippets["fails"]
    assert fails["request"]["version"] == "latest"
    assert (fails["state"], fails["status"]) == ("failed", "✘ Failed")
    assert fails["output"] == "to stderr\n"
    # Another element's text, sent as a file of its own beside the code.
    files = snippets["files"]
    assert files["request"]["files"] == {"": 'read a b < data.txt\necho "sum $((a + b))"',
                                         "data.txt": "2 3"}
    assert files["output"] == "sum 5\n"
    # The refusal crossed CORS too: the widget read its status.
    unknown = snippets["unknown"]
    assert unknown["output"] == "404 - Unknown sandbox or command."
    assert unknown["state"] == "failed"


def every_submission(stack: Stack) -> list[str]:
    """The ids of every tenant's submissions (the widget's are `anonymous`'s),
    read with an admin token added for it."""
    tokens = stack.base / "tokens"
    if ADMIN not in tokens.read_text():
        tokens.write_text(tokens.read_text() + f"admin {ADMIN}\n")
    request = urllib.request.Request(f"{stack.url}/v1/submissions?limit=100",
                                     headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return [s["id"] for s in json.loads(answer.read())["items"]]


def test_a_page_from_an_origin_not_listed_cannot_run(widget: WidgetSetup) -> None:
    before = every_submission(widget.stack)
    result = drive(widget, widget.elsewhere, ["hello"])
    hello = result["snippets"]["hello"]
    # The preflight was refused: the browser never sent the POST.
    assert (hello["state"], hello["output"]) == ("failed", "request failed"), hello
    assert every_submission(widget.stack) == before
