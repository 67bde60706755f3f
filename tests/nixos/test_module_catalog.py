"""services.nixjail.environments and services.nixjail.callbacks.secretFile,
evaluated with nixpkgs' lib: rendered into settings that nixjail accepts, and
the callbacks' key passed to the API as a credential."""

from __future__ import annotations

from nixos_eval import EXAMPLES

from nixjail.settings import Settings

HOST = EXAMPLES / "all-in-one.nix"
GCC = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.gcc ]; }"
GCC_NIX = GCC.replace('"', '\\"')  # as a Nix string

CATALOG = f"""{{
  services.nixjail.environments = {{
    gcc = {{
      version = "13";
      description = "C with gcc";
      aliases = [ "c" ];
      shellNix = "{GCC_NIX}";
      mainFile = "main.c";
      compileSh = "gcc -O2 -o main main.c";
      runSh = "./main";
    }};
    python = {{
      shellNixFile = "/etc/nixjail/python.nix";
      runSh = "python3 main.py";
    }};
  }};
  services.nixjail.callbacks.secretFile = "/run/secrets/nixjail-callbacks";
}}"""


def test_the_catalog_and_the_callbacks_key_reach_the_settings_and_the_api(evaluate) -> None:
    result = evaluate(HOST, CATALOG)
    assert result["failedAssertions"] == []
    settings = result["settings"]
    assert settings["environments"] == [
        {"name": "gcc", "version": "13", "description": "C with gcc", "aliases": ["c"],
         "shell_nix": GCC, "main_file": "main.c", "compile_sh": "gcc -O2 -o main main.c",
         "run_sh": "./main"},
        {"name": "python", "version": "", "description": "", "aliases": [],
         "shell_nix_file": "/etc/nixjail/python.nix", "main_file": "main",
         "run_sh": "python3 main.py"},
    ]
    secret = "/run/credentials/nixjail-api.service/callback-secret"
    assert settings["callbacks"]["secret_file"] == secret
    # The file every unit reads holds what nixjail accepts.
    parsed = Settings.model_validate(result["etc"]["nixjail/settings.toml"]["value"])
    assert sorted(parsed.catalog()) == ["c", "gcc", "python"]
    assert str(parsed.callbacks.secret_file) == secret
    credentials = result["services"]["nixjail-api"]["serviceConfig"]["LoadCredential"]
    assert "callback-secret:/run/secrets/nixjail-callbacks" in credentials
    # Beside the tokens file's credential, not instead of it.
    assert any(item.startswith("api-tokens:") for item in credentials)


def test_without_them_nothing_is_added(evaluate) -> None:
    result = evaluate(HOST)
    assert "environments" not in result["settings"]
    assert "secret_file" not in result["settings"].get("callbacks", {})
    credentials = result["services"]["nixjail-api"]["serviceConfig"]["LoadCredential"]
    assert not any(item.startswith("callback-secret:") for item in credentials)


def test_an_entry_needs_one_shell_nix(evaluate) -> None:
    both = ('{ services.nixjail.environments.bad = { shellNix = "x"; '
            'shellNixFile = "/etc/x.nix"; runSh = "true"; }; }')
    neither = '{ services.nixjail.environments.bad = { runSh = "true"; }; }'
    for change in (both, neither):
        failed = evaluate(HOST, change)["failedAssertions"]
        assert failed == ["services.nixjail.environments.bad needs shellNix or shellNixFile, "
                          "exactly one."], failed


COMPAT = """{
  services.nixjail.environments.bash = {
    shellNix = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.bash ]; }";
    mainFile = "main.sh";
    runSh = "bash main.sh";
    judge0 = { ids = [ 46 ]; name = "Bash (5.0.0)"; };
    piston = { language = "bash"; version = "5.2.0"; aliases = [ "sh" ]; };
    codapi = { sandbox = "bash"; commands.run = { }; };
  };
  services.nixjail.settings.compat = {
    judge0 = { enabled = true; allow_delete = true; };
    piston = { enabled = true; anonymous = true; };
    codapi = {
      enabled = true;
      anonymous = true;
      allowed_origins = [ "https://docs.example.org" ];
    };
    anonymous_requests_per_minute = 10;
  };
}"""


def test_the_front_ends_and_their_mappings_reach_the_settings(evaluate) -> None:
    result = evaluate(HOST, COMPAT)
    assert result["failedAssertions"] == []
    (bash,) = result["settings"]["environments"]
    assert bash["judge0"] == {"ids": [46], "name": "Bash (5.0.0)"}
    assert bash["piston"] == {"language": "bash", "version": "5.2.0", "aliases": ["sh"]}
    parsed = Settings.model_validate(result["etc"]["nixjail/settings.toml"]["value"])
    compat = parsed.compat
    assert (compat.judge0.enabled, compat.judge0.allow_delete) == (True, True)
    assert (compat.piston.enabled, compat.piston.anonymous) == (True, True)
    assert compat.codapi.allowed_origins == ["https://docs.example.org"]
    assert compat.anonymous_requests_per_minute == 10
    entry = parsed.catalog()["bash"]
    assert entry.codapi is not None and list(entry.codapi.commands) == ["run"]
    assert entry.judge0 is not None and entry.judge0.ids == [46]


def test_an_entry_without_mappings_renders_none(evaluate) -> None:
    result = evaluate(HOST, CATALOG)
    for entry in result["settings"]["environments"]:
        assert not {"judge0", "piston", "codapi"} & set(entry), entry
