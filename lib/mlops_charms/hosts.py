"""Host names and addresses as they may appear in URLs and server configuration.

Values from config and from remote applications end up in command lines and config files
(MLflow's ``--allowed-hosts``, Apache's ``ServerName``, consumers' URLs): only a DNS name or
an IP address passes, so no wildcard, list separator or space can widen what a server accepts.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_dns_name(value: str) -> bool:
    """Whether ``value`` is a DNS name: dot-separated labels of letters, digits and '-'."""
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def is_ip_address(value: str) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (without brackets)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_host(value: str) -> bool:
    """Whether ``value`` is a DNS name or an IP address."""
    return is_dns_name(value) or is_ip_address(value)
