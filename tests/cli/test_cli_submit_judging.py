"""`nixjail submit` with test cases, catalog environments and arguments, and
`nixjail environments`, against a real `nixjail api` subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from cli_harness import SHELL_NIX, Api, make_dir, nixjail, start_api, stop_api

from nixjail.models import CaseResult, Environment, StageResult, StageStatus, Verdict
from nixjail.spool import Queue, shell_nix_sha256

CATALOG_SHELL = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; }"
CATALOG = f"""
[[environments]]
name = "busybox-sh"
version = "1.36"
description = "The POSIX shell of busybox"
aliases = ["sh"]
shell_nix = {json.dumps(CATALOG_SHELL)}
main_file = "main.sh"
run_sh = "busybox sh main.sh"
"""


def test_a_tests_folder_becomes_cases_with_args_and_a_checker(api: Api,
                                                               tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {
        "shell.nix": SHELL_NIX, "run.sh": 'echo "$@"\n', "lib.sh": "x=1\n",
        "tests/b.in": "2\n", "tests/b.out": "two\n", "tests/a.in": "1\n",
        "tests/a.out": "one\n", "tests/only.in": "3\n", "tests/notes.md": "# kept\n"})
    done = nixjail("submit", directory, "--api", api.url, "--no-wait", "--arg=-v",
                   "--arg", "two words", "--checker", "tokens", "--stop-on-failure")
    assert done.returncode == 0, done.stderr
    request = api.spool.get(done.stdout.split()[0]).request
    assert request.args == ["-v", "two words"]
    assert request.checker is not None and request.checker.kind == "tokens"
    assert request.stop_on_failure is True
    assert [(case.name, case.stdin, case.expected_output) for case in request.tests] == [
        ("a", "1\n", "one\n"), ("b", "2\n", "two\n"), ("only", "3\n", None)]
    # The pairs are cases, not files; anything else under tests/ stays a file.
    assert set(request.files) == {"lib.sh", "tests/notes.md"}


def test_check_sh_makes_a_custom_checker(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "cat\n",
                                    "check.sh": "exit 0\n", "tests/a.in": "x\n"})
    done = nixjail("submit", directory, "--api", api.url, "--no-wait")
    assert done.returncode == 0, done.stderr
    request = api.spool.get(done.stdout.split()[0]).request
    assert request.checker is not None
    assert (request.checker.kind, request.checker.check_sh) == ("custom", "exit 0\n")
    assert "check.sh" not in request.files


def test_the_case_table_and_exit_72_when_a_case_fails(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "cat\n",
                                    "tests/add.in": "1\n", "tests/add.out": "1\n",
                                    "tests/big.in": "4\n", "tests/big.out": "5\n"})
    done = nixjail("submit", directory, "--api", api.url, "--no-wait")
    submission_id = done.stdout.split()[0]
    lease = api.spool.lease(Queue.run, "test-worker")
    assert lease is not None and lease.submission_id == submission_id
    api.spool.report_stage(lease, "compile", StageResult.skipped())
    api.spool.report_case(lease, 0, CaseResult(status=StageStatus.ok, exit_code=0,
                                               name="add", verdict=Verdict.accepted,
                                               stdout="1\n", wall_time_ms=14))
    api.spool.report_case(lease, 1, CaseResult(
        status=StageStatus.ok, exit_code=0, name="big", verdict=Verdict.wrong_answer,
        stdout="4\n", message="line 1: expected '5', got '4'"))
    api.spool.complete(lease)
    shown = nixjail("status", submission_id, "--api", api.url)
    assert shown.returncode == 72, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["case", "verdict", "status", "wall", "cpu", "memory",
                                "message"]
    assert lines[1].split()[:3] == ["add", "accepted", "ok"]
    assert lines[2].split()[:3] == ["big", "wrong_answer", "ok"]
    assert lines[2].endswith("line 1: expected '5', got '4'")
    assert lines[3] == "verdict: wrong_answer (1 of 2 accepted)"


def test_an_environment_stands_in_for_shell_nix_and_run_sh(tmp_path: Path) -> None:
    api = start_api(tmp_path, extra=CATALOG)
    try:
        directory = make_dir(tmp_path / "dir", {"main.sh": "echo hi\n"})
        done = nixjail("submit", directory, "--api", api.url, "--no-wait",
                       "--environment", "sh")
        assert done.returncode == 0, done.stderr
        request = api.spool.get(done.stdout.split()[0]).request
        assert (request.environment, request.shell_nix) == ("sh", CATALOG_SHELL)
        assert request.run_sh == "busybox sh main.sh"

        unknown = nixjail("submit", directory, "--api", api.url, "--environment", "cobol")
        assert unknown.returncode == 64
        assert "environment: no environment named 'cobol'" in unknown.stderr

        listed = nixjail("environments", "--api", api.url)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split(maxsplit=4) for line in listed.stdout.splitlines()]
        assert rows == [["name", "version", "built", "aliases", "description"],
                        ["busybox-sh", "1.36", "no", "sh", "The POSIX shell of busybox"]]
        api.spool.publish_environment("busybox-sh", Environment(
            key="0" * 64, inputs="/nix/store/" + "a" * 32 + "-inputs",
            script="/nix/store/" + "b" * 32 + "-env"),
            shell_nix_sha256=shell_nix_sha256(CATALOG_SHELL))
        listed = nixjail("environments", "--api", api.url, "--json")
        (entry,) = json.loads(listed.stdout)["environments"]
        assert entry["built"] is True
    finally:
        stop_api(api)


def test_without_shell_nix_or_environment_is_a_usage_error(tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"run.sh": "echo hi\n"})
    done = nixjail("submit", directory, "--api", "http://127.0.0.1:9")
    assert done.returncode == 64
    assert done.stderr == f"nixjail: {directory} has no shell.nix (or give --environment)\n"
