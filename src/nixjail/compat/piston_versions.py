"""Versions and version ranges as Piston's clients write them (npm's semver).

A Piston request's `version` is a range: `3.10.0`, `3.x`, `3`, `*`, `^3.1`,
`~3.10`, `>=3.8 <3.12`, `3.8 - 3.11`, alternatives joined by `||`
(`semantic_version.NpmSpec`, npm's own rules, prereleases included). The
newest catalog runtime the range takes wins, compared as versions (3.10 is
newer than 3.9), never as strings. A catalog version may leave out its minor
and patch parts (`5.2` is 5.2.0); one that is no version at all (`latest`)
is taken only by `*`, a missing version, or its own exact text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from semantic_version import NpmSpec, Version

# Longest range text taken: a range is a few comparators, not a document.
MAX_RANGE_CHARS = 256
# npm takes a space between an operator and its version (">= 1.2"); NpmSpec does not.
_OPERATOR_SPACE = re.compile(r"(<=|>=|<|>|=|~>|~|\^)\s+")


def parse_range(text: str) -> NpmSpec:
    """The range `text` says; ValueError naming it when it says none."""
    if len(text) > MAX_RANGE_CHARS:
        raise ValueError(f"a version range longer than {MAX_RANGE_CHARS} characters")
    try:
        return NpmSpec(_OPERATOR_SPACE.sub(r"\1", text.strip()) or "*")
    except ValueError:
        raise ValueError(f"{text[:100]!r} is not a version or a range of versions") from None


def _version(text: str) -> Version | None:
    try:
        return Version.coerce(text)
    except ValueError:
        return None


def newest(versions: Sequence[str], asked: str | None) -> str | None:
    """The newest of `versions` that `asked` (a range) takes; ValueError when
    `asked` is no range (nor the exact text of one of `versions`).

    None (no version asked) is `*`, and when no release is there, the newest
    of the others: a prerelease, then a version that is no version at all."""
    if asked is not None and asked in versions and _version(asked) is None:
        return asked  # a version that is no version, asked by its own text
    wanted = parse_range("*" if asked is None else asked)
    parsed = {text: version for text in versions if (version := _version(text)) is not None}
    chosen = wanted.select(parsed.values())
    if chosen is None and asked is None:
        chosen = max(parsed.values(), default=None)  # prereleases only
    if chosen is not None:
        return next(text for text, version in parsed.items() if version == chosen)
    if asked is None or wanted == NpmSpec("*"):
        return next((text for text in versions if text not in parsed), None)
    return None
