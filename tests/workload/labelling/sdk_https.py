"""The official Label Studio SDK over HTTPS, as a user gives it the CA: create a project, read it.

Usage: ``python sdk_https.py URL CA_FILE`` with the API key in ``LABEL_STUDIO_API_KEY``.
The SDK's httpx client verifies the server with CA_FILE alone (``verify=``, an SSL context).
Prints one JSON report on stdout: the project read back, or the transport error's type and
message when the connection was refused (a wrong CA, plain HTTP to the HTTPS port).

This file runs in Label Studio's own venv (label-studio-sdk 2.1.2, as in the rock).
"""

from __future__ import annotations

import json
import os
import ssl
import sys

import httpx  # pyright: ignore[reportMissingImports]
from label_studio_sdk import LabelStudio  # pyright: ignore[reportMissingImports]

LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>"""


def main() -> None:
    url, ca_file = sys.argv[1], sys.argv[2]
    verify = ssl.create_default_context(cafile=ca_file)
    http = httpx.Client(timeout=60, verify=verify)
    client = LabelStudio(
        base_url=url, api_key=os.environ["LABEL_STUDIO_API_KEY"], httpx_client=http, max_retries=0
    )
    try:
        created = client.projects.create(title="over HTTPS", label_config=LABEL_CONFIG)
        read = client.projects.get(id=created.id)
    except httpx.TransportError as error:
        json.dump({"error": type(error).__name__, "message": str(error)}, sys.stdout)
        return
    json.dump({"id": created.id, "read_id": read.id, "title": read.title}, sys.stdout)


if __name__ == "__main__":
    main()
