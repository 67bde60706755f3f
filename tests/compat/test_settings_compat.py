"""The settings of the front ends and the catalog's mappings: what is refused."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from compat_helpers import FIXTURE_CATALOG, REPO
from pydantic import ValidationError

from nixjail.settings import Settings, load_settings


def entry(name: str, **mappings: Any) -> dict[str, Any]:
    return {"name": name, "shell_nix": "{}: 1", "run_sh": "true", **mappings}


def test_defaults_are_off_with_their_prefixes() -> None:
    compat = Settings().compat
    assert (compat.judge0.enabled, compat.piston.enabled, compat.codapi.enabled) == (
        False, False, False)
    assert (compat.judge0.prefix, compat.piston.prefix, compat.codapi.prefix) == (
        "/judge0", "/piston", "/codapi")
    assert not (compat.judge0.anonymous or compat.piston.anonymous or compat.codapi.anonymous)
    assert compat.judge0.allow_delete is False and compat.codapi.allowed_origins == []
    assert compat.anonymous_requests_per_minute > 0


@pytest.mark.parametrize(("environments", "claimed"), [
    ([entry("a", judge0={"ids": [46], "name": "A"}),
      entry("b", judge0={"ids": [47, 46], "name": "B"})], "Judge0 id 46"),
    ([entry("a", piston={"language": "bash", "version": "5.2.0"}),
      entry("b", piston={"language": "bash", "version": "5.2.0", "aliases": ["sh"]})],
     "Piston bash 5.2.0"),
    ([entry("a", codapi={"sandbox": "bash"}),
      entry("b", codapi={"sandbox": "bash", "version": "latest"})],
     "codapi sandbox bash latest"),
])
def test_two_entries_cannot_claim_one_name(environments: list[dict[str, Any]],
                                           claimed: str) -> None:
    with pytest.raises(ValidationError, match=f"{claimed} is claimed by both 'a' and 'b'"):
        Settings.model_validate({"environments": environments})


def test_other_versions_and_ids_may_coexist() -> None:
    settings = Settings.model_validate({"environments": [
        entry("a", judge0={"ids": [71], "name": "A"},
              piston={"language": "python", "version": "3.11.0"},
              codapi={"sandbox": "python", "version": "3.11"}),
        entry("b", judge0={"ids": [113], "name": "B"},
              piston={"language": "python", "version": "3.12.0"},
              codapi={"sandbox": "python"})]})
    assert [list(e.codapi.commands) for e in settings.environments if e.codapi] == [
        ["run"], ["run"]]


@pytest.mark.parametrize(("compat", "reason"), [
    ({"judge0": {"prefix": "/v1/judge0"}}, "lies under nixjail's own /v1"),
    ({"piston": {"prefix": "/metrics"}}, "lies under nixjail's own /metrics"),
    ({"piston": {"prefix": "/judge0/piston"}}, "lies under compat.judge0.prefix"),
    ({"codapi": {"prefix": "codapi"}}, "String should match pattern"),
    ({"codapi": {"prefix": "/codapi/"}}, "String should match pattern"),
    ({"codapi": {"allowed_origins": ["http://example.org/page"]}}, "match pattern"),
    ({"judge0": {"ids": [1]}}, "Extra inputs are not permitted"),
    ({"judge0": {"version": "1.12.0"}}, "1.13.1"),
    ({"anonymous_requests_per_minute": 0}, "greater than 0"),
])
def test_bad_compat_settings_are_refused(compat: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings.model_validate({"compat": compat})


def test_a_judge0_mapping_needs_an_id() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        Settings.model_validate({"environments": [entry("a", judge0={"ids": [],
                                                                     "name": "A"})]})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings.model_validate({"environments": [entry("a", judge0={"ids": [0],
                                                                     "name": "A"})]})


@pytest.mark.parametrize("catalog", ["fixture.toml", "nixpkgs.toml"])
def test_the_shipped_catalogs_load(tmp_path: Any, catalog: str) -> None:
    path = REPO / "examples" / "catalog" / catalog
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("[compat.judge0]\nenabled = true\n\n" + path.read_text())
    settings = load_settings(settings_file)
    assert all(e.judge0 and e.piston and e.codapi for e in settings.environments)
    if catalog == "nixpkgs.toml":
        names = {e.name for e in settings.environments}
        assert names == {"c", "cpp", "python", "java", "javascript", "go", "rust", "bash"}
        ids = {i for e in settings.environments if e.judge0 for i in e.judge0.ids}
        # Judge0 CE 1.13.1's and 1.14.0's ids of the same languages.
        assert {46, 50, 54, 60, 62, 63, 71, 73} <= ids
        assert {102, 103, 105, 107, 108, 113} <= ids


def test_the_fixture_catalog_is_what_the_tests_rely_on() -> None:
    with FIXTURE_CATALOG.open("rb") as handle:
        (bash,) = tomllib.load(handle)["environments"]
    assert bash["judge0"] == {"ids": [46], "name": "Bash (5.0.0)"}
    assert bash["piston"]["language"] == "bash" and bash["piston"]["aliases"] == ["sh"]
    assert bash["piston"]["version"].startswith("5.")
    assert bash["codapi"]["sandbox"] == "bash" and "run" in bash["codapi"]["commands"]
