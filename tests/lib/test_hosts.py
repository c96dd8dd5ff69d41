"""Host names and addresses: only a DNS name or an IP address passes, nothing that widens it."""

from __future__ import annotations

import pytest

from mlops_charms.hosts import is_dns_name, is_host, is_ip_address

LABEL_63 = "a" * 63
NAME_253 = ".".join([LABEL_63, LABEL_63, LABEL_63, "d" * 61])


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "mlflow",
        "mlflow.mlops.svc.cluster.local",
        "mlflow.mlops.svc.cluster.local.",  # fully qualified: the trailing dot is the root
        "a-b.example.com",
        "xn--bcher-kva.example",
        "0tracking.example",
        LABEL_63,
        NAME_253,
        NAME_253 + ".",
    ],
)
def test_dns_names_pass(name: str):
    assert is_dns_name(name)
    assert is_host(name)


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "*",
        "*.example.com",
        "a,b",
        "example.com,evil.com",
        "a b",
        " example.com",
        "example.com ",
        "exa\tmple.com",
        "-leading.example.com",
        "trailing-.example.com",
        "example.-com",
        "a..b",
        ".example.com",
        "example.com..",
        "under_score.example",
        "host:8080",
        "user@host",
        "[fd00::1]",
        "a" * 64,
        NAME_253 + "d",
        "ex/ample",
    ],
)
def test_anything_else_is_no_host(value: str):
    assert not is_dns_name(value)
    assert not is_host(value)


@pytest.mark.parametrize("value", ["example.com\n", "a\n", "10.0.0.1\n"])
def test_a_trailing_newline_is_no_host(value: str):
    assert not is_host(value)


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "fd00::1", "::1", "2001:db8::8:1"])
def test_ip_addresses_pass(address: str):
    assert is_ip_address(address)
    assert is_host(address)


@pytest.mark.parametrize(
    "value", ["10.1.2", "10.1.2.256", "[::1]", "fd00::1::2", "10.1.2.3/24", "10.1.2.3:80", ""]
)
def test_malformed_addresses_are_no_ip_address(value: str):
    assert not is_ip_address(value)


def test_an_ipv6_address_is_no_dns_name():
    assert not is_dns_name("fd00::1")
