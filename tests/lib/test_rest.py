"""The shared JSON client against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from mlops_charms.rest import JSONClient, RESTError

ANSWERS = {
    "/ok": (200, b'{"value": 1}'),
    "/health": (200, b"OK"),
    "/mlflow-refusal": (
        404,
        b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No user\\nx"}',
    ),
    "/django-refusal": (403, b'{"detail": "Authentication credentials were not provided."}'),
    "/html-refusal": (502, b"<html>bad gateway</html>"),
    "/not-json": (200, b"<html>login</html>"),
}


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, bytes, str | None]]] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Handler.seen.append((self.command, self.path, body, self.headers.get("Authorization")))
        status, payload = ANSWERS.get(self.path.split("?")[0], (500, b""))
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def client(base_url: str) -> JSONClient:
    return JSONClient(base_url, {"Authorization": "Basic abc"}, service="Demo", timeout=5)


def test_get_sends_the_body_as_query_and_decodes_json(base_url):
    assert client(base_url).call("GET", "/ok", {"name": "a b"}) == {"value": 1}
    method, path, body, auth = Handler.seen[-1]
    assert (method, path, body, auth) == ("GET", "/ok?name=a+b", b"", "Basic abc")


def test_post_sends_json(base_url):
    client(base_url).call("POST", "/ok", {"username": "ada"})
    assert json.loads(Handler.seen[-1][2]) == {"username": "ada"}


def test_mlflow_style_refusal_keeps_code_and_first_line(base_url):
    with pytest.raises(RESTError) as refusal:
        client(base_url).call("GET", "/mlflow-refusal", {})
    assert refusal.value.status == 404
    assert refusal.value.code == "RESOURCE_DOES_NOT_EXIST"
    assert str(refusal.value) == "Demo refused the request (404): No user"


def test_django_style_refusal_uses_detail(base_url):
    with pytest.raises(RESTError, match=r"\(403\): Authentication credentials were not provided"):
        client(base_url).call("POST", "/django-refusal", {})


def test_non_json_refusal_and_non_json_answer_are_one_line_errors(base_url):
    with pytest.raises(RESTError, match=r"\(502\): <html>bad gateway</html>"):
        client(base_url).call("GET", "/html-refusal")
    with pytest.raises(RESTError, match="non-JSON content"):
        client(base_url).call("GET", "/not-json")


def test_unreachable_server_is_a_rest_error_not_a_traceback():
    unreachable = JSONClient("http://127.0.0.1:9", {}, service="Demo", timeout=2)
    with pytest.raises(RESTError, match="Demo unreachable"):
        unreachable.call("GET", "/ok")
    assert unreachable.is_healthy() is False


def test_health_needs_a_200(base_url):
    assert client(base_url).is_healthy("/health") is True
    assert client(base_url).is_healthy("/html-refusal") is False
