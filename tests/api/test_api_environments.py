"""GET /v1/environments and PUT /v1/environments/{name} over real HTTP."""

from __future__ import annotations

from pathlib import Path

from api_helpers import SUBMITTER, WORKER, Api, start_server

from nixjail.client import Client
from nixjail.models import Environment
from nixjail.settings import CatalogEnvironment
from nixjail.spool import shell_nix_sha256

GCC = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.gcc ]; }"
ENV = Environment(key="a" * 64, inputs="/nix/store/" + "b" * 32 + "-inputs",
                  script="/nix/store/" + "c" * 32 + "-nixjail-env.sh")


def catalog_api(make_api, tmp_path: Path, **kwargs) -> Api:
    api = make_api(**kwargs)
    shell_file = tmp_path / "python.nix"
    shell_file.write_text("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { }")
    # The catalog is read at each request: the tests edit it in place.
    api.settings.environments = [
        CatalogEnvironment(name="gcc", version="13.2", description="C with gcc",
                           aliases=["c"], shell_nix=GCC, main_file="main.c",
                           compile_sh="gcc -O2 main.c -o main", run_sh="./main"),
        CatalogEnvironment(name="python", shell_nix_file=shell_file, main_file="main.py",
                           run_sh="python3 main.py"),
    ]
    return api


def publish(api: Api, name: str, sha: str, *, token: str | None = WORKER):
    return api.request("PUT", f"/v1/environments/{name}", token=token,
                       json={"environment": ENV.model_dump(mode="json"),
                             "shell_nix_sha256": sha})


def listed(api: Api) -> dict[str, dict]:
    answer = api.get("/v1/environments", token=SUBMITTER)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()["environments"]}


def test_lists_the_catalog_unbuilt_then_built(make_api, tmp_path: Path) -> None:
    api = catalog_api(make_api, tmp_path)
    entries = listed(api)
    assert list(entries) == ["gcc", "python"]
    gcc = entries["gcc"]
    assert gcc == {"name": "gcc", "version": "13.2", "description": "C with gcc",
                   "aliases": ["c"], "main_file": "main.c",
                   "compile_sh": "gcc -O2 main.c -o main", "run_sh": "./main",
                   "shell_nix": GCC, "built": False, "built_at": None}
    assert entries["python"]["shell_nix"].startswith("{ pkgs")  # read from its file
    assert entries["python"]["compile_sh"] is None

    answer = publish(api, "gcc", shell_nix_sha256(GCC))
    assert answer.status_code == 204, answer.text
    entries = listed(api)
    assert entries["gcc"]["built"] is True and entries["gcc"]["built_at"]
    assert entries["python"]["built"] is False
    assert api.spool.published_environments()["gcc"].environment == ENV


def test_an_edited_entry_shows_unbuilt(make_api, tmp_path: Path) -> None:
    api = catalog_api(make_api, tmp_path)
    file = api.settings.environments[1].shell_nix_file
    assert publish(api, "python", shell_nix_sha256(file.read_text())).status_code == 204
    assert listed(api)["python"]["built"] is True
    file.write_text(file.read_text() + "\n# edited\n")
    entry = listed(api)["python"]
    assert entry["built"] is False and entry["built_at"] is None


def test_publishing_needs_a_worker_token(make_api, tmp_path: Path) -> None:
    api = catalog_api(make_api, tmp_path)
    sha = shell_nix_sha256(GCC)
    assert publish(api, "gcc", sha, token=None).status_code == 401
    refused = publish(api, "gcc", sha, token=SUBMITTER)
    assert refused.status_code == 403
    assert "worker" in refused.json()["description"]
    assert not api.spool.published_environments()
    # And listing is for submitters: a worker token alone is refused.
    assert api.get("/v1/environments", token=WORKER).status_code == 403


def test_without_a_tokens_file_listing_is_open_and_publishing_refused(
        make_api, tmp_path: Path) -> None:
    api = catalog_api(make_api, tmp_path, auth=False)
    assert api.get("/v1/environments", token=None).status_code == 200
    assert publish(api, "gcc", shell_nix_sha256(GCC), token=None).status_code in (401, 403)


def test_bad_names_and_bodies_are_refused_naming_the_field(make_api, tmp_path: Path) -> None:
    api = catalog_api(make_api, tmp_path)
    sha = shell_nix_sha256(GCC)
    unknown = publish(api, "rust", sha)
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "name"
    alias = publish(api, "c", sha)  # an alias is no entry's own name
    assert alias.status_code == 404
    bad = publish(api, "Not..A.Name", sha)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "name"
    short = publish(api, "gcc", "abc")
    assert short.status_code == 422, short.text
    assert short.json()["errors"][0]["field"] == "shell_nix_sha256"
    assert not api.spool.published_environments()


def test_the_client_publishes_with_a_worker_token(tmp_path: Path) -> None:
    api, stop = start_server(tmp_path / "client")
    try:
        api.settings.environments = [
            CatalogEnvironment(name="gcc", shell_nix=GCC, run_sh="./main")]
        Client(api.url, WORKER).publish_environment("gcc", ENV,
                                                    shell_nix_sha256=shell_nix_sha256(GCC))
        assert listed(api)["gcc"]["built"] is True
    finally:
        stop()
