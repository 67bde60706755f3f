"""Fixtures of the systemd tests: the image (built once, cached) and machines.

These tests need root and a running dockerd, like the other docker tests:
scripts/bootstrap provides both, and may build the image ahead
(tests/systemd/build-image). A missing dockerd fails them, never skips them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from systemd_machine import SystemdMachine, build_image


@pytest.fixture(scope="session")
def systemd_image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def boot(systemd_image: str) -> Iterator[Callable[[str], SystemdMachine]]:
    """Boots machines with the given settings TOML; removes them after the module."""
    machines: list[SystemdMachine] = []

    def start(settings: str) -> SystemdMachine:
        machine = SystemdMachine(systemd_image, settings)
        machines.append(machine)
        return machine.start()

    yield start
    for machine in machines:
        machine.remove()
