"""Attacks by a hostile submitter, through the API, against the real stack.

The stacks are the end-to-end ones (tests/e2e): `nixjail serve` as a user
runs it, real dockerd, nix and nsjail."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
