"""Fixtures of the evaluation tests: nixpkgs' lib, found once (nixos_eval)."""

from __future__ import annotations

import pytest
from nixos_eval import Evaluation, find_nixpkgs_lib


@pytest.fixture(scope="session")
def evaluate() -> Evaluation:
    return Evaluation(find_nixpkgs_lib())
