"""What the front ends share: a source file made a submission, refusals in the
client's names, the queue bound decided once, the anonymous rate limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from compat_helpers import fixture_environments

from nixjail.api.admission import QueueFull, check_room
from nixjail.api.errors import ApiError
from nixjail.api.schemas import FieldError
from nixjail.compat.anonymous import RateLimiter
from nixjail.compat.common import rename_fields, request_for_source, stage_bytes, submit
from nixjail.compat.judge0_zip import BadZip, unzip
from nixjail.models import StageResult
from nixjail.settings import CodapiCommand, Settings
from nixjail.spool import Spool


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate({"environments": fixture_environments(),
                                    "callbacks": {"allowed_prefixes": ["http://hooks/"]}})


def test_a_source_becomes_the_entrys_main_file(settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    request = request_for_source(settings, entry, b"echo hi", stdin=b"in", args=["a", "b c"])
    assert request.environment == "bash"
    assert request.file_bytes() == {"main.sh": b"echo hi"}
    assert request.run_sh == entry.run_sh and request.compile_sh is None
    assert request.shell_nix == entry.shell_nix
    assert (request.stdin, request.args) == ("in", ["a", "b c"])


def test_binary_sources_and_files_travel_as_base64(settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    request = request_for_source(settings, entry, b"\xff\x00", stdin=b"\xfe",
                                 extra_files={"lib/data.bin": b"\x80"})
    assert request.file_bytes() == {"main.sh": b"\xff\x00", "lib/data.bin": b"\x80"}
    assert request.files["main.sh"].encoding == "base64"
    assert request.stdin.encoding == "base64"


def test_a_command_env_and_note_shape_the_scripts(settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    command = CodapiCommand(compile_sh="bash -n main.sh", run_sh="bash main.sh --test")
    request = request_for_source(settings, entry, b"true", command=command,
                                 env={"OPTS": "-a 'b'"}, note="front end 1",
                                 stderr_to_stdout=True)
    assert request.compile_sh == "# front end 1\nexport OPTS='-a '\"'\"'b'\"'\"''\n" \
        "bash -n main.sh"
    assert request.run_sh == "# front end 1\nexport OPTS='-a '\"'\"'b'\"'\"''\n" \
        "exec 2>&1\nbash main.sh --test"


def test_limits_apply_as_on_v1_and_refusals_take_the_clients_names(
        settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    request = request_for_source(settings, entry, b"x", limits={"run": {"wall_time_s": 2}})
    assert settings.resolve_limits(request).run.wall_time_s == 2
    with pytest.raises(ApiError) as refused:
        request_for_source(settings, entry, b"x", limits={"run": {"wall_time_s": 10_000}},
                           field_names={"limits.run.wall_time_s": "run_timeout"})
    assert refused.value.status_code == 422
    assert [(e.field, e.reason) for e in refused.value.errors] == [
        ("run_timeout", "10000.0 is above the maximum 60.0")]
    # The sentence speaks the client's names too (Piston shows only it).
    assert refused.value.description == "run_timeout: 10000.0 is above the maximum 60.0"
    with pytest.raises(ApiError) as refused:
        request_for_source(settings, entry, b"x", callback_url="http://elsewhere/x",
                           field_names={"callback_url": "callback_url"})
    assert refused.value.errors[0].field == "callback_url"
    assert "not under a prefix" in refused.value.errors[0].reason


def test_a_file_cannot_take_the_sources_name(settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    with pytest.raises(ApiError) as refused:
        request_for_source(settings, entry, b"x", extra_files={"main.sh": b"y"},
                           field_names={"files": "files"})
    assert refused.value.errors[0].field == "files"


def test_bad_file_names_are_refused_by_the_contract(settings: Settings) -> None:
    entry = settings.catalog()["bash"]
    with pytest.raises(ApiError) as refused:
        request_for_source(settings, entry, b"x", extra_files={"../up": b"y"},
                           field_names={"files": "additional_files"})
    assert refused.value.errors[0].field == "additional_files"


def test_rename_fields_takes_the_longest_prefix() -> None:
    errors = [FieldError(field="limits.run.memory_mib", reason="r1"),
              FieldError(field="tests[0].expected_output", reason="r2"),
              FieldError(field="limitsx", reason="r3")]
    renamed = rename_fields(errors, {"limits": "limits", "limits.run.memory_mib": "mem",
                                     "tests[0]": "case"})
    assert [e.field for e in renamed] == ["mem", "case", "limitsx"]


def test_the_queue_bound_is_one_rule(tmp_path: Path, settings: Settings) -> None:
    bounded = settings.model_copy(update={"api": settings.api.model_copy(
        update={"max_queued": 2})})
    spool = Spool(tmp_path / "spool", tmp_path / "run", dependency_jobs=False)
    entry = bounded.catalog()["bash"]
    kicks: list[int] = []
    request = request_for_source(bounded, entry, b"x")
    check_room(spool, bounded, 2)
    with pytest.raises(QueueFull):
        check_room(spool, bounded, 3)
    for _ in range(2):
        submit(spool, bounded, request, "alice", lambda: kicks.append(1))
    with pytest.raises(QueueFull) as full:
        submit(spool, bounded, request, "alice", lambda: kicks.append(1))
    assert full.value.queued == 2 and "2 jobs are waiting" in full.value.reason
    assert len(kicks) == 2 and spool.count_queued() == 2


def test_rate_limiter_counts_a_sliding_minute() -> None:
    now = [1000.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.hit("a") == 0 and limiter.hit("a") == 0
    assert limiter.hit("a") == pytest.approx(60)
    assert limiter.hit("b") == 0  # another address has its own count
    now[0] += 30
    assert limiter.hit("a") == pytest.approx(30)
    now[0] += 30.5
    assert limiter.hit("a") == 0


def test_stage_bytes_reads_either_encoding() -> None:
    assert stage_bytes(StageResult(status="ok", stdout="hé"), "stdout") == "hé".encode()
    assert stage_bytes(StageResult(status="ok", stderr="/w==", stderr_encoding="base64"),
                       "stderr") == b"\xff"
    assert stage_bytes(None, "stdout") == b""


def test_unzip_bounds_what_it_reads() -> None:
    import base64
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dir/", b"")
        archive.writestr("dir/a.txt", b"a" * 100)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    assert unzip(encoded, max_bytes=100) == {"dir/a.txt": b"a" * 100}
    with pytest.raises(BadZip, match="more than 99 bytes"):
        unzip(encoded, max_bytes=99)
    with pytest.raises(BadZip, match="not valid base64"):
        unzip("@@@", max_bytes=100)
