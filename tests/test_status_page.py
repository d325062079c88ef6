"""GET /api/status/page in a real headless Chromium (Debian's `chromium`): served over HTTP by the
registered functions, it loads with no console errors, shows every table's verdict, its numbers
match GET /api/status, and screenshots at desktop and phone width are saved for review."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import urllib.request
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import orjson
import pytest

from tests import statuscases

# Chromium logs each console message as `...:CONSOLE:<level>] "text", source: url (line)`.
_CONSOLE_RE = re.compile(r":CONSOLE:?\(?(\d+)\)?\]? (.*)")


class _FunctionsHost:
    """The registered HTTP functions behind a real loopback HTTP server, as the Functions host
    routes /api/<route> to them (the key check itself is the platform's)."""

    def __init__(self, functions: dict):
        routes = {
            function.get_trigger().route: function.get_user_function()
            for function in functions.values()
            if function.get_trigger().get_dict_repr()["type"] == "httpTrigger"
        }

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                function = routes.get(url.path.removeprefix("/api/"))
                if function is None:
                    self.send_error(404)
                    return
                request = func.HttpRequest("GET", self.path, params=dict(parse_qsl(url.query)), body=b"")
                response = function(request)
                body = response.get_body()
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type") or response.mimetype)
                for name, value in response.headers.items():
                    if name.lower() != "content-type":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is required: `make setup` installs it (apt-get install chromium)"
    return found


def _browse(url: str, profile, width: int, height: int, *extra: str) -> subprocess.CompletedProcess:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        *extra,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _console(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


class _Rows(HTMLParser):
    """The overview rows: each <tr data-table> and its <td data-field data-value> cells' text."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.overall = None
        self._row = self._field = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "tr" and "data-table" in attributes:
            self._row = self.rows.setdefault(
                attributes["data-table"],
                {"row verdict": attributes["data-verdict"], "backup": attributes["data-backup"]},
            )
        elif tag == "td" and self._row is not None and "data-field" in attributes:
            self._field = attributes["data-field"]
            self._row[self._field] = {"value": attributes.get("data-value"), "text": ""}
        elif tag == "p" and "data-overall" in attributes:
            self.overall = attributes["data-overall"]

    def handle_endtag(self, tag):
        if tag == "td":
            self._field = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._field:
            self._row[self._field]["text"] += data


def test_the_page_in_chromium_matches_the_api(storage, monkeypatch, unique_name, functions, tmp_path):
    cases = statuscases.build(storage, monkeypatch, unique_name)
    host = _FunctionsHost(functions)
    try:
        page = f"{host.url}/api/status/page?code=the-function-key"
        desktop = _browse(page, tmp_path / "profile", 1280, 2400, f"--screenshot={tmp_path / 'status-desktop.png'}")
        phone = _browse(page, tmp_path / "profile", 390, 3200, f"--screenshot={tmp_path / 'status-phone.png'}")
        dom = _browse(page, tmp_path / "profile", 1280, 900, "--dump-dom")
        with urllib.request.urlopen(f"{host.url}/api/status?code=the-function-key") as answer:
            document = orjson.loads(answer.read())
    finally:
        host.server.shutdown()

    for result in (desktop, phone, dom):
        assert result.returncode == 0, result.stderr[-2000:]
        assert _console(result) == [], _console(result)
    for name in ("status-desktop.png", "status-phone.png"):
        shot = tmp_path / name
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, name
    print(f"screenshots for review: {tmp_path / 'status-desktop.png'} {tmp_path / 'status-phone.png'}")

    parsed = _Rows()
    parsed.feed(dom.stdout)
    assert parsed.overall == document["verdict"] == "unprotected"
    assert set(parsed.rows) == {row["table"] for row in document["tables"]} == set(cases.values())
    for row in document["tables"]:
        shown = parsed.rows[row["table"]]
        # In colour (the badge's class) and in words (its text).
        assert shown["row verdict"] == shown["verdict"]["value"] == row["verdict"]
        assert shown["verdict"]["text"].split(" ", 1)[1] == row["verdict"]
        assert shown["reason"]["text"] == row["reason"]
        newest = row["newest_backup"]
        if newest is None:
            assert shown["entities"]["text"] == "—" and shown["backup"] == ""
            continue
        assert shown["backup"] == newest["backup"] and newest["backup"] in dom.stdout
        assert int(shown["entities"]["text"].replace(",", "")) == newest["entities"]
        assert int(shown["bytes"]["value"]) == newest["bytes"]
        # Two requests a moment apart: the ages agree to the tenth of an hour.
        assert abs(float(shown["age_hours"]["value"]) - newest["age_hours"]) < 0.1
    assert "<script" not in dom.stdout.lower()


def test_a_page_that_loads_anything_from_outside_fails_the_console_check(tmp_path):
    """The check above can fail: the page's policy blocks an outside image, and Chromium says so."""
    from tablebackup.status.page import CONTENT_SECURITY_POLICY

    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!doctype html><meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<img src="http://203.0.113.1/x.png">'
    )
    result = _browse(bad.as_uri(), tmp_path / "profile", 800, 600, "--dump-dom")

    assert any("Content Security Policy" in line for line in _console(result)), result.stderr[-2000:]


@pytest.fixture(autouse=True)
def _no_stray_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
