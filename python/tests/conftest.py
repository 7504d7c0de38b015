"""Shared helpers for the triage Python tests (no vLLM needed)."""

from __future__ import annotations

import itertools
import os

import pytest

# The vLLM tests (where vLLM is installed) build vLLM configs but run no model: vLLM's CPU
# platform, so that a machine without a GPU can. Set before any test module imports vLLM,
# which picks its platform once.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import triage


def skip_without_vllm(exc: Exception, also: str = "") -> None:
    """What a vLLM test module does when importing vLLM failed with ``exc``: re-raise it
    when ``TRIAGE_REQUIRE_VLLM`` is set (``scripts/vllm-check.sh``: a skip is a failure),
    else skip the whole module with the reason (and ``also``)."""
    if os.environ.get("TRIAGE_REQUIRE_VLLM"):
        raise exc
    pytest.skip(
        f"vLLM is not importable ({type(exc).__name__}: {exc}); run scripts/vllm-check.sh{also}",
        allow_module_level=True,
    )


class FakeRequest:
    """The three attributes of vLLM's ``Request`` that a waiting queue reads."""

    _ids = itertools.count()

    def __init__(self, request_id: str, priority: int, arrival_time: float) -> None:
        self.request_id = request_id
        self.priority = priority
        self.arrival_time = arrival_time

    def __repr__(self) -> str:
        return f"<{self.request_id} p={self.priority} t={self.arrival_time}>"


def toml_config(classes, *, max_wait_ms=60_000, bucket_width_ms=10, order=None) -> str:
    """TOML text for ``classes``: ``[(name, (lo, hi), promote_after_ms or None), ...]``;
    ``order`` ("deadline" or "ladder") if given, else the default (deadline)."""
    lines = [f"bucket_width_ms = {bucket_width_ms}", f"max_wait_ms = {max_wait_ms}"]
    if order is not None:
        lines.append(f'order = "{order}"')
    for name, (lo, hi), promote in classes:
        lines += ["[[classes]]", f'name = "{name}"', f"vllm_priority = [{lo}, {hi}]"]
        if promote is not None:
            lines.append(f"promote_after_ms = {promote}")
    lines += ["[slo]", "enabled = false"]
    lines += ["[[slo.classes]]"] * len(classes)
    return "\n".join(lines) + "\n"


def one_class_per_priority(priorities) -> triage.Config:
    """A configuration in which each priority value has a class of its own (at most 8):
    the one under which triage's order with aging off is exactly vLLM's."""
    return triage.Config.from_toml(
        toml_config([(f"P{p}".replace("-", "m"), (p, p), None) for p in sorted(priorities)])
    )


@pytest.fixture
def aging_config() -> triage.Config:
    """HIGH [0,0]; MEDIUM [1,9] promoted after 400 ms; LOW [10,100] after 200 ms; max wait
    1 s; 10 ms buckets; the ladder order, the scheduler's order that ages requests by
    promote_after_ms (the vLLM queue always does, whatever the order)."""
    return triage.Config.from_toml(
        toml_config(
            [("HIGH", (0, 0), None), ("MEDIUM", (1, 9), 400), ("LOW", (10, 100), 200)],
            max_wait_ms=1000,
            order="ladder",
        )
    )
