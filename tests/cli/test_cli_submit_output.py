"""What `nixjail submit` prints for each way a submission can end, and what it reads."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nixjail.cli.submit import (
    Progress,
    SubmissionDirError,
    describe,
    read_directory,
    summary,
)
from nixjail.models import (
    StageResult,
    Stages,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)
REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="./main", compile_sh="cc main.c")


def submission(status: SubmissionStatus, **stages: StageResult) -> Submission:
    # Unvalidated: these functions read only the id, status, error and stages.
    return Submission.model_construct(id="a1", status=status, created_at=NOW, updated_at=NOW,
                                      request=REQUEST, stages=Stages(**stages), error=None)


OK = StageResult(status=StageStatus.ok, exit_code=0, wall_time_ms=7)


def test_stage_lines() -> None:
    cached = StageResult(status=StageStatus.ok, exit_code=0, wall_time_ms=120, cached=True)
    assert describe("dependencies", cached) == "dependencies: ok (cached, 120 ms)"
    assert describe("compile", OK) == "compile: ok (7 ms)"
    assert describe("run", StageResult(status="nonzero_exit", exit_code=3, wall_time_ms=5)) \
        == "run: nonzero_exit (exit 3, 5 ms)"
    assert describe("run", StageResult(status="signaled", signal=9, wall_time_ms=5)) \
        == "run: signaled (signal 9, 5 ms)"
    assert describe("compile", StageResult.skipped()) == "compile: skipped"


def test_progress_on_a_terminal_says_what_runs() -> None:
    out = io.StringIO()
    progress = Progress(out, interactive=True)
    progress.update(submission(SubmissionStatus.queued))
    progress.update(submission(SubmissionStatus.running))
    progress.update(submission(SubmissionStatus.running, compile=OK))
    progress.update(submission(SubmissionStatus.running, compile=OK))
    assert out.getvalue() == ("queued…\ncompile: running…\ncompile: ok (7 ms)\n"
                              "run: running…\n")
    quiet = io.StringIO()
    Progress(quiet, interactive=True, quiet=True).update(
        submission(SubmissionStatus.running, compile=OK))
    assert quiet.getvalue() == ""


def test_summary_table() -> None:
    ended = submission(SubmissionStatus.error, compile=OK)
    ended.error = "container init crashed"
    assert summary(ended).splitlines() == [
        "stage         status  exit  wall  cpu   memory",
        "dependencies  -",
        "compile       ok      0     7 ms  0 ms  0 KiB",
        "run           -",
        "submission a1: error (container init crashed)",
    ]


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shell.nix").write_text("{}: {}")
    (tmp_path / "run.sh").write_text("true")
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(SubmissionDirError, match="alias is a symlink to a directory"):
        read_directory(tmp_path)


def test_scripts_in_subdirectories_are_plain_files(tmp_path: Path) -> None:
    (tmp_path / "shell.nix").write_text("{}: {}")
    (tmp_path / "run.sh").write_text("sh tools/run.sh")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "run.sh").write_text("echo inner")
    scripts, files, hidden = read_directory(tmp_path)
    assert hidden == []
    assert scripts == {"shell.nix": "{}: {}", "run.sh": "sh tools/run.sh"}
    assert files == {"tools/run.sh": "echo inner"}
