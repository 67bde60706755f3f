"""Pure parts of container init: job parsing (the status rules are the jail kit's)."""

from __future__ import annotations

import json

import pytest
from init_helpers import make_job

from protocol import (
    JobError,
    parse_job,
    skipped,
)


def test_parse_job_accepts_the_contract():
    job = parse_job(json.dumps(make_job("true", files={
        "a/b.txt": {"content": "aGk=", "encoding": "base64"}, "c": "plain"})).encode())
    assert job.files == {"a/b.txt": b"hi", "c": b"plain"}
    assert job.compile_sh is None and job.environment.kind == "none"


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a//b"])
def test_parse_job_rejects_bad_file_names(name):
    with pytest.raises(JobError):
        parse_job(json.dumps(make_job("true", files={name: "x"})).encode())


def test_parse_job_needs_dependencies_limits_for_builds():
    job = make_job("true", environment={"kind": "build", "shell_nix": "{}: null"})
    del job["limits"]["dependencies"]
    with pytest.raises(JobError, match="dependencies"):
        parse_job(json.dumps(job).encode())


def test_skipped_results():
    assert skipped("dependencies").to_json()["cached"] is False
    assert "cached" not in skipped("run").to_json()
