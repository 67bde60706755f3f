"""nixos/module.nix evaluated with nixpkgs' lib for every layout of
docs/operations.md (the host configurations in nixos/examples/, which the
docs show verbatim): no failed assertion, settings that nixjail accepts, and
units that are the templates tests/systemd boots, with drop-ins that add
credentials and PATH but change nothing else.
"""

from __future__ import annotations

import re

import pytest
from nixos_eval import EXAMPLES, REPO
from unit_files import (
    DIRECTORIES,
    HOST_KEYS,
    REQUIRED_TOOLS,
    parse,
    service_contract,
    shipped_units,
    single,
    template,
    with_drop_in,
)

from nixjail.settings import Settings

LAYOUTS = ["all-in-one", "api-only", "worker", "cache-builder", "api-with-remotes"]
API_UNITS = {"nixjail-api", "nixjail-expire-leases", "nixjail-gc"}
RUNNER_UNITS = {"nixjail-runner", "nixjail-runner-image"}
TOKENS = "/run/secrets/nixjail-api-tokens"

# Per layout: the services the module configures, and what its settings say.
EXPECTED = {
    "all-in-one": {
        "services": API_UNITS | RUNNER_UNITS | {"nixjail-cache-builder", "nixjail-api-tokens"},
        "listen": "127.0.0.1:8460", "ports": [], "cache_builder_enabled": True,
        "nix_serve": False, "docker": True,
    },
    "api-only": {
        "services": API_UNITS | {"nixjail-api-tokens"},
        "listen": "0.0.0.0:8460", "ports": [8460], "cache_builder_enabled": True,
        "nix_serve": False, "docker": False,
    },
    "worker": {
        "services": RUNNER_UNITS, "listen": "127.0.0.1:8460", "ports": [],
        "cache_builder_enabled": False, "nix_serve": False, "docker": True,
    },
    "cache-builder": {
        "services": {"nixjail-cache-builder"}, "listen": "127.0.0.1:8460", "ports": [5000],
        "cache_builder_enabled": False, "nix_serve": True, "docker": False,
    },
    "api-with-remotes": {
        "services": API_UNITS | RUNNER_UNITS | {"nixjail-cache-builder", "nixjail-api-tokens"},
        "listen": "[::]:8460", "ports": [8460, 5000], "cache_builder_enabled": True,
        "nix_serve": True, "docker": True,
    },
}


def host(layout: str):
    return EXAMPLES / f"{layout}.nix"


@pytest.fixture(scope="module")
def hosts(evaluate) -> dict[str, dict]:
    return {layout: evaluate(host(layout)) for layout in LAYOUTS}


def values(value) -> list[str]:
    """A unit option's value as the unit file's values (NixOS's toOption)."""
    items = value if isinstance(value, list) else [value]
    return ["true" if item is True else "false" if item is False else str(item)
            for item in items]


def drop_in(unit: dict, section: str, config_key: str) -> dict[str, dict[str, list[str]]]:
    """The drop-in NixOS writes for a unit of systemd.packages."""
    result = {"Unit": {key: values(value) for key, value in unit["unitConfig"].items()},
              section: {key: values(value) for key, value in unit[config_key].items()}}
    if "environment" in unit:
        result[section]["Environment"] = [
            f"{name}={value}" for name, value in sorted(unit["environment"].items())
            if value is not None]
        if not result[section]["Environment"]:
            del result[section]["Environment"]
    return result


def effective(result: dict, kind: str, name: str) -> dict[str, dict[str, list[str]]]:
    """The unit the host runs: the package's template with the module's drop-in."""
    unit = result[kind][name]
    section, key = {"services": ("Service", "serviceConfig"), "sockets": ("Socket", "socketConfig"),
                    "timers": ("Timer", "timerConfig")}[kind]
    dropped = drop_in(unit, section, key)
    if kind == "sockets" and unit["listenStreams"]:
        dropped[section].setdefault("ListenStream", []).extend(unit["listenStreams"])
    suffix = {"services": "service", "sockets": "socket", "timers": "timer"}[kind]
    nixjail = f"{result['package']['path']}/bin/{result['package']['mainProgram']}"
    return with_drop_in(template(f"{name}.{suffix}", nixjail), dropped)


def test_the_docs_show_each_layout_as_evaluated() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```nix\n(.*?)```", docs, re.S)
    shown = {match.group(1): block for block in blocks
             if (match := re.match(r"# nixos/examples/([\w-]+)\.nix\n", block))}
    assert sorted(shown) == sorted(LAYOUTS)
    for layout, block in shown.items():
        assert block == host(layout).read_text(), f"docs/operations.md differs from {layout}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_layout_evaluates_without_failed_assertions(hosts, layout: str) -> None:
    result = hosts[layout]
    assert result["failedAssertions"] == []
    assert result["warnings"] == []
    expected = EXPECTED[layout]
    assert set(result["services"]) == expected["services"]
    assert result["firewallTCPPorts"] == expected["ports"]
    assert result["nixServe"]["enable"] is expected["nix_serve"]
    assert result["docker"] is expected["docker"]
    # The units, tmpfiles and the command all come from the one package.
    package = result["package"]["path"]
    assert result["systemdPackages"] == [package] == result["tmpfilesPackages"]
    assert package in result["systemPackages"]
    assert result["users"]["nixjail"] == {"name": "nixjail", "isSystemUser": True,
                                          "group": "nixjail", "home": "/var/lib/nixjail"}
    assert "nixjail" in result["groups"]
    assert result["maintainers"] == {}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_settings_file_is_what_nixjail_accepts(hosts, layout: str) -> None:
    result = hosts[layout]
    etc = result["etc"]["nixjail/settings.toml"]
    # The file every unit names (NIXJAIL_SETTINGS) holds the module's settings.
    assert etc["enable"] and etc["mode"] == "symlink"
    assert etc["value"] == result["settings"]

    def no_null(value) -> bool:
        if isinstance(value, dict):
            return all(no_null(item) for item in value.values())
        if isinstance(value, list):
            return all(no_null(item) for item in value)
        return value is not None

    assert no_null(result["settings"])
    settings = Settings.model_validate(result["settings"])
    assert str(settings.spool_dir) == "/var/lib/nixjail"
    assert str(settings.run_dir) == "/run/nixjail"
    assert str(settings.runner.kick_socket) == "/run/nixjail/runner.sock"
    image = result["image"]
    assert settings.runner.image == f"{image['imageName']}:{image['imageTag']}"
    assert image["includeNixDB"] is True
    assert settings.api.listen == EXPECTED[layout]["listen"]
    assert settings.cache_builder.enabled is EXPECTED[layout]["cache_builder_enabled"]
    assert str(settings.runner.nixpkgs).startswith("/nix/store/")
    assert settings.runner.pool_size == 2  # the warm pool is on
    # Secrets are credentials of the unit that reads them, never store paths.
    services = result["services"]
    if "nixjail-api" in services:
        assert str(settings.api.tokens_file) == "/run/credentials/nixjail-api.service/api-tokens"
        assert services["nixjail-api"]["serviceConfig"]["LoadCredential"] == [
            f"api-tokens:{TOKENS}"]


def test_a_worker_of_its_own(hosts) -> None:
    result = hosts["worker"]
    settings = Settings.model_validate(result["settings"])
    assert settings.runner.api_url == "http://api.internal:8460"
    assert str(settings.runner.api_token_file) == (
        "/run/credentials/nixjail-runner.service/api-token")
    # It never idles out: nothing would start it again.
    assert result["settings"]["runner"]["idle_exit_s"] == "never"
    assert settings.runner.idle_exit_s is None
    assert settings.runner.caches == ["http://builder-1.internal:5000",
                                      "http://builder-2.internal:5000"]
    assert len(settings.runner.trusted_public_keys) == 2
    runner = result["services"]["nixjail-runner"]
    assert runner["wantedBy"] == ["multi-user.target"]
    assert runner["serviceConfig"]["LoadCredential"] == [
        "api-token:/run/secrets/nixjail-worker-token"]
    unit = effective(result, "services", "nixjail-runner")
    assert "network-online.target" in " ".join(unit["Unit"]["Wants"])
    assert "network-online.target" in " ".join(unit["Unit"]["After"])
    # The daemon checks the copied paths' signatures; the host's own
    # substituters stay as they are.
    nix = result["nixSettings"]
    assert set(settings.runner.trusted_public_keys) <= set(nix["trusted-public-keys"])
    assert nix["substituters"] == ["https://cache.nixos.org/"]
    assert nix["trusted-substituters"] == []
    assert result["sockets"]["nixjail-runner"]["wantedBy"] == ["sockets.target"]
    assert "nixjail-api" not in result["sockets"]


def test_a_cache_builder_of_its_own(hosts) -> None:
    result = hosts["cache-builder"]
    settings = Settings.model_validate(result["settings"])
    assert settings.cache_builder.api_url == "http://api.internal:8460"
    assert str(settings.cache_builder.api_token_file) == (
        "/run/credentials/nixjail-cache-builder.service/api-token")
    assert settings.cache_builder.idle_exit_s is None
    builder = result["services"]["nixjail-cache-builder"]
    assert builder["wantedBy"] == ["multi-user.target"]
    assert builder["serviceConfig"]["LoadCredential"] == [
        "api-token:/run/secrets/nixjail-worker-token"]
    # nix-serve is the operator's, with its own options; it signs.
    assert result["nixServe"] == {"enable": True, "port": 5000, "openFirewall": True,
                                  "secretKeyFile": "/run/secrets/nixjail-cache.sec"}
    assert result["sockets"] == {} and result["timers"] == {}


def test_the_api_hosts_timers_and_tokens(hosts) -> None:
    for layout in ("all-in-one", "api-only", "api-with-remotes"):
        result = hosts[layout]
        assert result["timers"]["nixjail-expire-leases"]["wantedBy"] == ["timers.target"]
        assert result["timers"]["nixjail-gc"]["wantedBy"] == ["timers.target"]
        assert result["sockets"]["nixjail-api"]["wantedBy"] == ["sockets.target"]
        # A change of the tokens file restarts the API, which copies it anew.
        tokens = result["paths"]["nixjail-api-tokens"]
        assert tokens["wantedBy"] == ["paths.target"]
        assert tokens["pathConfig"] == {"PathChanged": TOKENS,
                                        "Unit": "nixjail-api-tokens.service"}
        restart = result["services"]["nixjail-api-tokens"]["serviceConfig"]
        assert restart["Type"] == "oneshot"
        assert restart["ExecStart"].endswith("/bin/systemctl try-restart nixjail-api.service")
    # A failed runner's leases go back at once where the API runs.
    runner = effective(hosts["all-in-one"], "services", "nixjail-runner")
    assert runner["Unit"]["OnFailure"] == ["nixjail-expire-leases.service"]
    # The image is loaded at boot, not first when a submission comes.
    image = hosts["all-in-one"]["services"]["nixjail-runner-image"]
    assert image["wantedBy"] == ["multi-user.target"]
    assert image["serviceConfig"]["Type"] == "oneshot"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_units_are_the_templates_booted_under_systemd(hosts, layout: str) -> None:
    result = hosts[layout]
    shipped = set(shipped_units())
    for name, unit in result["services"].items():
        if f"{name}.service" not in shipped:
            continue
        dropped = drop_in(unit, "Service", "serviceConfig")
        # A host adds credentials and PATH; how the unit starts, as whom, with
        # which directories and hardening is the template's.
        assert set(dropped["Service"]) <= HOST_KEYS, name
        merged = effective(result, "services", name)
        for key, expected in service_contract(f"{name}.service").items():
            if key == "ExecStart":
                nixjail = f"{result['package']['path']}/bin/nixjail"
                assert merged["Service"][key] == [e.replace("@nixjail@", nixjail)
                                                  for e in expected], name
            else:
                assert merged["Service"][key] == expected, (name, key)
        for key, value in DIRECTORIES.items():
            if key in template(f"{name}.service")["Service"]:
                assert single(merged, "Service", key) == value, (name, key)
        # The settings the template names are the module's.
        assert "NIXJAIL_SETTINGS=/etc/nixjail/settings.toml" in merged["Service"]["Environment"]
        tools = set()
        for entry in unit["path"]:
            tools |= set(result["packages"][entry])
        path = unit["environment"]["PATH"]
        assert path.split(":")[:len(unit["path"])] == [f"{e}/bin" for e in unit["path"]]
        assert REQUIRED_TOOLS.get(f"{name}.service", set()) <= tools, (name, tools)
    for name in result["sockets"]:
        merged = effective(result, "sockets", name)
        listens = merged["Socket"]["ListenStream"]
        if name == "nixjail-api":
            assert listens == [result["settings"]["api"]["listen"]]
        else:
            assert listens == [result["settings"]["runner"]["kick_socket"]]
            assert merged["Socket"] == template("nixjail-runner.socket")["Socket"]
    for name, timer in result["timers"].items():
        assert timer["timerConfig"] == {}
        assert effective(result, "timers", name)["Timer"] == template(f"{name}.timer")["Timer"]


def test_the_cache_builder_shares_the_spool_without_owning_it() -> None:
    # systemd chowns a StateDirectory= to the unit's user at every start: the
    # root cache builder must not declare the nixjail units' directories.
    builder = template("nixjail-cache-builder.service")["Service"]
    assert "StateDirectory" not in builder and "RuntimeDirectory" not in builder
    assert builder["Delegate"] == ["yes"]
    for hardening in ("ProtectHostname", "LockPersonality", "RestrictSUIDSGID",
                      "RestrictAddressFamilies", "SystemCallArchitectures", "ProtectClock"):
        assert hardening not in builder, f"every build would inherit {hardening}="
    tmpfiles = (REPO / "nixos" / "units" / "nixjail.tmpfiles.in").read_text()
    lines = [line.split() for line in tmpfiles.splitlines() if line and line[0] != "#"]
    assert lines == [["d", "/var/lib/nixjail", "0750", "nixjail", "nixjail", "-"],
                     ["d", "/run/nixjail", "0711", "nixjail", "nixjail", "-"]]
    for unit in shipped_units():
        if unit.endswith(".service") and unit != "nixjail-cache-builder.service":
            service = template(unit)["Service"]
            assert {key: service[key][0] for key in DIRECTORIES} == DIRECTORIES, unit


WITH_LIB = "{ lib, ... }: "


@pytest.mark.parametrize(("layout", "change", "message"), [
    ("worker", WITH_LIB + "{ services.nixjail.caches = lib.mkForce [ ]; }",
     "services.nixjail.runner.apiUrl needs services.nixjail.caches"),
    ("worker", WITH_LIB + "{ services.nixjail.cachePublicKeys = lib.mkForce [ ]; }",
     "services.nixjail.caches needs services.nixjail.cachePublicKeys"),
    ("worker", WITH_LIB + "{ services.nixjail.runner.apiTokenFile = lib.mkForce null; }",
     "services.nixjail.runner.apiUrl needs services.nixjail.runner.apiTokenFile"),
    ("worker", WITH_LIB + "{ services.nixjail.api.enable = lib.mkForce true; }",
     "lease from another host's API"),
    ("cache-builder", WITH_LIB + "{ services.nix-serve.secretKeyFile = lib.mkForce null; }",
     "services.nix-serve.secretKeyFile is needed on a cache builder"),
    ("cache-builder", WITH_LIB + "{ services.nixjail.cacheBuilder.enable = lib.mkForce false; }",
     "with none of api, runner and cacheBuilder"),
])
def test_assertions(evaluate, layout: str, change: str, message: str) -> None:
    failed = evaluate(host(layout), change)["failedAssertions"]
    assert len(failed) == 1 and message in failed[0], failed


@pytest.mark.parametrize("setting", [
    "spool_dir = \"/srv/nixjail\"", "run_dir = \"/tmp/nixjail\"",
    "runner.kick_socket = \"/tmp/kick\"", "runner.image = \"mine:1\"",
    "api.listen = \"0.0.0.0:1\"",
])
def test_what_the_units_fix_cannot_be_set(evaluate, setting: str) -> None:
    error = evaluate.error(host("all-in-one"), f"{{ services.nixjail.settings.{setting}; }}")
    assert "is read-only, but it's set multiple times" in error


def test_toml_has_no_null(evaluate) -> None:
    error = evaluate.error(host("all-in-one"),
                           "{ services.nixjail.settings.runner.api_url = null; }")
    assert "is not of type `TOML value'" in error


def test_a_secret_cannot_be_a_nix_path(evaluate) -> None:
    # A path value would be copied into the world-readable store.
    error = evaluate.error(host("all-in-one"),
                           '{ services.nixjail.apiTokensFile = /. + "/run/secrets/tokens"; }')
    assert "not in the Nix store" in error


def test_every_template_parses() -> None:
    for unit in shipped_units():
        parsed = parse((REPO / "nixos" / "units" / f"{unit}.in").read_text())
        assert parsed.get("Unit", {}).get("Description"), unit
