"""A small Label Studio REST client (stdlib ``urllib``): the calls labelling needs."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class LabellingError(Exception):
    """A labelling operation failed; the message is one line saying why."""


class LabelStudio:
    """Label Studio's REST API, authenticated with a (legacy) API token."""

    def __init__(self, url: str, token: str, timeout: float = 60.0, ca_file: str | None = None):
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self._timeout = timeout
        # An HTTPS Label Studio is verified with ``ca_file`` alone, if given.
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """Send one request and return the decoded JSON answer (None when empty)."""
        url = f"{self._url}{path}"
        if query:
            url = f"{url}?{urllib.parse.urlencode(query, doseq=True)}"
        data = None if body is None else json.dumps(body).encode()
        # The URL is the workload's own Label Studio (LABEL_STUDIO_URL), never user input.
        request = urllib.request.Request(  # noqa: S310
            url, data=data, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=self._context
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace").strip().splitlines()
            reason = detail[0][:200] if detail else error.reason
            raise LabellingError(
                f"Label Studio refused {method} {path} ({error.code}): {reason}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise LabellingError(f"Label Studio is unreachable at {self._url}: {error}") from None
        return json.loads(payload) if payload else None

    # projects

    def projects(self) -> list[dict]:
        """Every project (paged through)."""
        found: list[dict] = []
        page = 1
        while True:
            answer = self.call("GET", "/api/projects", query={"page": page, "page_size": 100})
            found.extend(answer["results"])
            if not answer.get("next"):
                return found
            page += 1

    def project_by_title(self, title: str) -> dict | None:
        """The project called ``title``, or None."""
        return next((p for p in self.projects() if p.get("title") == title), None)

    def create_project(self, fields: dict) -> dict:
        return self.call("POST", "/api/projects", fields)

    def update_project(self, project_id: int, fields: dict) -> dict:
        return self.call("PATCH", f"/api/projects/{project_id}", fields)

    # tasks and annotations

    def import_tasks(self, project_id: int, tasks: list[dict]) -> None:
        if tasks:
            self.call("POST", f"/api/projects/{project_id}/import", tasks)

    def export_tasks(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations (skipped ones included)."""
        return self.call(
            "GET",
            f"/api/projects/{project_id}/export",
            query={"exportType": "JSON", "download_all_tasks": "true"},
        )

    def users(self) -> dict[int, str]:
        """{user id: email} of the organization's users."""
        return {user["id"]: user["email"] for user in self.call("GET", "/api/users/")}

    # media

    def ensure_local_storage(self, project_id: int, path: str, title: str) -> None:
        """Let the project's tasks read media under ``path`` (a local files storage)."""
        storages = self.call("GET", "/api/storages/localfiles", query={"project": project_id})
        if any(storage.get("path") == path for storage in storages):
            return
        self.call(
            "POST",
            "/api/storages/localfiles",
            {"project": project_id, "path": path, "title": title, "use_blob_urls": True},
        )
