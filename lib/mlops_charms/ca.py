"""A CA handed over a relation: the PEM certificates a consumer verifies a server with.

Kept apart from ``mlops_charms.tls`` (the server's side, which needs the tls-certificates
library and cryptography) so that a consumer charm validates the field without them.
"""

from __future__ import annotations

import re
from typing import Annotated

import pydantic

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)


def _pem_certificates(value: str) -> str:
    certificates = _PEM_CERTIFICATE.findall(value)
    if not certificates or _PEM_CERTIFICATE.sub("", value).strip():
        raise ValueError("must be PEM certificates")
    return "".join(certificate.strip() + "\n" for certificate in certificates)


# One or more PEM certificates, normalised to one per line block and a final newline.
CACertificates = Annotated[str, pydantic.AfterValidator(_pem_certificates)]
