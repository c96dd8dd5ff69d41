"""COS through the machine's agent: tests/cos_agent_cases.py, on this charm."""

from __future__ import annotations

from tests.cos_agent_cases import CosAgentCases


class TestCosAgent(CosAgentCases):
    job_name = "mlflow"
    metrics_port = 9101
