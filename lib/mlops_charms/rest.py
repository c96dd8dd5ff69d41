"""A small JSON-over-HTTP client for the workloads' REST APIs (stdlib only: hooks stay fast).

Used from the charm container against the workload on ``localhost``; the base URL is the
charm's own, never user input. Over HTTPS the server is verified against the CA given (its
certificate names ``localhost``), never without verification.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping


class RESTError(Exception):
    """The server refused a request or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class JSONClient:
    """Sends JSON requests with fixed headers and turns every failure into ``RESTError``."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        service: str,
        timeout: float = 10.0,
        ca: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **headers}
        self._service = service
        self._timeout = timeout
        # An HTTPS server of the stack is verified with its own CA (PEM), not the system's.
        self._context = ssl.create_default_context(cadata=ca) if ca else None

    def is_healthy(self, path: str = "/health") -> bool:
        """Whether ``path`` answers 200 (no authentication sent)."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - see the module docstring
                f"{self.base_url}{path}", timeout=self._timeout, context=self._context
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def call(self, method: str, path: str, body: Mapping | None = None) -> dict:
        """Send ``body`` (as a query string for GET) and return the decoded JSON answer."""
        url = f"{self.base_url}{path}"
        data = None
        if method == "GET" and body:
            url = f"{url}?{urllib.parse.urlencode(body)}"
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - see the module docstring
            url, data=data, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=self._context
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise self._refusal(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise RESTError(f"{self._service} unreachable: {error}") from None
        try:
            return json.loads(payload) if payload else {}
        except json.JSONDecodeError:
            raise RESTError(f"{self._service} answered {path} with non-JSON content") from None

    def _refusal(self, error: urllib.error.HTTPError) -> RESTError:
        body = error.read().decode(errors="replace")
        code, message = None, body or str(error.reason)
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            code = parsed.get("error_code")
            message = parsed.get("message") or parsed.get("detail") or body
        text = str(message).strip()
        first_line = text.splitlines()[0] if text else ""
        return RESTError(
            f"{self._service} refused the request ({error.code}): {first_line}",
            status=error.code,
            code=code,
        )
