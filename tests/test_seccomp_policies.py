"""Container init's stages and the cache builder's jobs deny the same system calls.

The two policies live apart (container init ships as plain files into the
runner image, the cache builder with the Python package); this keeps them
from drifting apart.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from nixjail.cache_builder import jail as builder_jail

REPO = Path(__file__).resolve().parents[1]


def _container_init_policy(monkeypatch: pytest.MonkeyPatch) -> str:
    # Container init's modules import their siblings by name, as in the image.
    monkeypatch.syspath_prepend(str(REPO / "container_init"))
    return importlib.import_module("jail").SECCOMP_POLICY


def _rules(policy: str) -> dict[str, set[str]]:
    """Action → the system calls (and clone's condition) it applies to."""
    rules = {}
    for action, body in re.findall(r"(ERRNO\(\d+\))\s*\{(.*?)\n\s*\}", policy, re.S):
        rules[action] = {" ".join(item.split()) for item in body.split(",") if item.strip()}
    return rules


def test_both_jails_deny_the_same_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    init_rules = _rules(_container_init_policy(monkeypatch))
    builder_rules = _rules(builder_jail.SECCOMP_POLICY)
    assert init_rules == builder_rules
    assert "ptrace" in init_rules["ERRNO(1)"]
    assert any(rule.startswith("clone") for rule in init_rules["ERRNO(1)"])
    assert "DEFAULT ALLOW" in builder_jail.SECCOMP_POLICY
