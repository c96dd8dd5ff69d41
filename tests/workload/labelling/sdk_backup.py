"""The official Label Studio SDK writes a project, then reads back what the server holds.

Usage: ``python sdk_backup.py write|read URL`` with the API key in ``LABEL_STUDIO_API_KEY``.
``write`` makes a project with tasks and annotations on some of them; ``read`` prints every
project, its tasks and their annotations as one JSON document, for the caller to compare.

Runs in Label Studio's own venv (label-studio-sdk 2.1.2, as in the rock).
"""

from __future__ import annotations

import json
import os
import sys

from label_studio_sdk import LabelStudio  # pyright: ignore[reportMissingImports]

LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>"""


def write(client: LabelStudio) -> None:
    project = client.projects.create(title="backed up", label_config=LABEL_CONFIG)
    texts = [{"data": {"text": f"review {index}"}} for index in range(5)]
    client.projects.import_tasks(id=project.id, request=texts)
    for index, task in enumerate(client.tasks.list(project=project.id)):
        if index < 3:
            label = "positive" if index % 2 else "negative"
            result = [
                {
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": [label]},
                }
            ]
            client.annotations.create(id=task.id, result=result)


def read(client: LabelStudio) -> dict:
    held = {}
    for project in client.projects.list():
        tasks = {}
        for task in client.tasks.list(project=project.id):
            annotations = [
                a.result[0]["value"]["choices"][0] for a in client.annotations.list(id=task.id)
            ]
            tasks[json.dumps(dict(task.data), sort_keys=True)] = annotations
        held[project.title] = tasks
    return held


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    api_key = os.environ["LABEL_STUDIO_API_KEY"]
    client = LabelStudio(base_url=url, api_key=api_key, timeout=60)
    if mode == "write":
        write(client)
    else:
        print(json.dumps(read(client), sort_keys=True))


if __name__ == "__main__":
    main()
