"""One official Label Studio SDK client doing a labelling session, run by Label Studio's venv.

Usage: ``python sdk_session.py URL TASKS`` with the API key in ``LABEL_STUDIO_API_KEY``.

One ``label_studio_sdk.LabelStudio`` client, so one pooled HTTP connection for every call:
create a project, import TASKS tasks, list them, then for each task create an annotation and
read it back at once (POST then GET), read the task, and add one more task and read it back.
The SDK's retries are off (``max_retries=0``): a transport error is reported, not hidden by a
resent request, which for a POST could duplicate what it created. Every call goes on after an
error; what the server holds at the end is read back so the caller can check nothing was lost
or doubled. Prints one JSON report on stdout.

This file runs in Label Studio's own venv (label-studio-sdk 2.1.2, as in the rock), not in the
tests' environment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx  # pyright: ignore[reportMissingImports]
from label_studio_sdk import LabelStudio  # pyright: ignore[reportMissingImports]

LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>"""


def choice(value: str) -> list[dict[str, Any]]:
    """An annotation result choosing ``value``."""
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [value]},
        }
    ]


class Session:
    """Calls through one SDK client; counts requests and collects transport errors."""

    def __init__(self, url: str, api_key: str):
        self.requests = 0
        self.errors: list[dict[str, str]] = []
        self.connections: set[str] = set()
        # The same httpx client the SDK makes by default (pooled, 60 s, redirects followed),
        # with hooks that count the requests it sends and the connections they went over.
        pool = httpx.Client(
            timeout=60,
            follow_redirects=True,
            event_hooks={"request": [self._count], "response": [self._connection]},
        )
        self.client = LabelStudio(
            base_url=url, api_key=api_key, httpx_client=pool, timeout=60, max_retries=0
        )

    def _count(self, _request: httpx.Request) -> None:
        self.requests += 1

    def _connection(self, response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        self.connections.add(repr(stream.get_extra_info("client_addr")))

    def call(self, name: str, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except httpx.TransportError as error:
            self.errors.append(
                {"call": name, "error": type(error).__name__, "message": str(error)}
            )
            return None


def run(url: str, api_key: str, task_count: int) -> dict[str, Any]:
    session = Session(url, api_key)
    client = session.client
    project = session.call(
        "projects.create",
        lambda: client.projects.create(title="SDK session", label_config=LABEL_CONFIG),
    )
    if project is None:
        return {"requests": session.requests, "errors": session.errors}
    texts = [{"data": {"text": f"item {index}"}} for index in range(task_count)]
    session.call(
        "projects.import_tasks",
        lambda: client.projects.import_tasks(id=project.id, request=texts, return_task_ids=True),
    )
    listed = session.call(
        "tasks.list", lambda: list(client.tasks.list(project=project.id, page_size=100))
    )
    task_ids = [task.id for task in listed or []]
    for index, task_id in enumerate(task_ids):
        label = "positive" if index % 2 else "negative"
        session.call(
            "annotations.create",
            lambda task_id=task_id, label=label: client.annotations.create(
                id=task_id, result=choice(label)
            ),
        )
        session.call(
            "annotations.list", lambda task_id=task_id: client.annotations.list(id=task_id)
        )
        session.call("tasks.get", lambda task_id=task_id: client.tasks.get(id=str(task_id)))
    added = session.call(
        "tasks.create",
        lambda: client.tasks.create(data={"text": "one more"}, project=project.id),
    )
    if added is not None:
        session.call("tasks.get", lambda: client.tasks.get(id=str(added.id)))
    requests, errors, connections = session.requests, session.errors, len(session.connections)
    # What the server holds, read back on a fresh connection so the totals do not depend
    # on the pool (these requests are not counted).
    check = LabelStudio(base_url=url, api_key=api_key, timeout=60)
    final = check.projects.get(id=project.id)
    return {
        "requests": requests,
        "connections": connections,
        "errors": errors,
        "project": project.id,
        "imported": len(task_ids),
        "tasks": final.task_number,
        "annotations": final.total_annotations_number,
    }


def main() -> None:
    url, task_count = sys.argv[1], int(sys.argv[2])
    report = run(url, os.environ["LABEL_STUDIO_API_KEY"], task_count)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
