"""Where the workload tests' Pebble forwards logs: the push APIs of Loki and of an OTel Collector.

One HTTP server answers both as they do: Loki's ``POST /loki/api/v1/push`` (JSON streams, 204)
and OTLP/HTTP's ``POST /v1/logs`` (JSON ``resourceLogs``, 200 with ``{}``; a body that is not
JSON is a 400, as the collector answers). It keeps every line with the labels a real Loki or
collector would store it under: Loki's stream labels, OTLP's resource attributes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOKI_PATH = "/loki/api/v1/push"
OTLP_PATH = "/v1/logs"


@dataclass(frozen=True)
class LogLine:
    """One line as it arrived: by which API, under which labels."""

    api: str  # "loki" or "otlp"
    labels: dict[str, str]
    line: str

    @property
    def service(self) -> str:
        """The Pebble service that wrote it (each API names it its own way)."""
        return self.labels.get("pebble_service") or self.labels.get("service.name", "")


def _loki_lines(body: dict) -> list[LogLine]:
    return [
        LogLine("loki", dict(stream["stream"]), line)
        for stream in body["streams"]
        for _timestamp, line in stream["values"]
    ]


def _otlp_lines(body: dict) -> list[LogLine]:
    lines = []
    for resource_logs in body["resourceLogs"]:
        labels = {
            attribute["key"]: attribute["value"]["stringValue"]
            for attribute in resource_logs["resource"]["attributes"]
        }
        for scope_logs in resource_logs["scopeLogs"]:
            lines += [
                LogLine("otlp", labels, record["body"]["stringValue"])
                for record in scope_logs["logRecords"]
            ]
    return lines


class LogReceiver:
    """The server; ``lines`` is everything received so far."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parse = {LOKI_PATH: _loki_lines, OTLP_PATH: _otlp_lines}.get(self.path)
                if parse is None:
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    received = parse(json.loads(self.rfile.read(length)))
                except (ValueError, KeyError, TypeError):
                    self.send_error(400)
                    return
                with receiver._lock:
                    receiver.lines += received
                if self.path == LOKI_PATH:
                    self.send_response(204)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                del format, args  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        """The collector's OTLP/HTTP endpoint (Pebble appends /v1/logs)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def loki_url(self) -> str:
        return self.url + LOKI_PATH

    def wait_for(
        self, wanted: Callable[[LogLine], bool], what: str, timeout: float = 30
    ) -> list[LogLine]:
        """The lines ``wanted`` matches, once there is one; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [line for line in self.lines if wanted(line)]
            if found:
                return found
            if time.monotonic() > deadline:
                services = sorted({(line.api, line.service) for line in self.lines})
                raise AssertionError(f"no {what} in {timeout} s; lines came from {services}")
            time.sleep(0.2)


@contextlib.contextmanager
def run_log_receiver() -> Iterator[LogReceiver]:
    receiver = LogReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
