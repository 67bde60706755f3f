"""The Piston v2 front end's edges over plain HTTP: a real API on loopback
around a real spool, a thread of the test playing the worker (no container):
runtimes, bodies sent as text/plain, versions and aliases, files in each
encoding, limits, refusals in Piston's shape, every key of an answer, the
synchronous wait and what ends it, and a fuzzer that no body makes a 5xx."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from compat_helpers import ALICE, BOB, CompatApi, fixture_environments, start_compat_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixjail.compat.piston import render
from nixjail.compat.piston_versions import newest
from nixjail.models import StageResult, Submission, SubmissionStatus
from nixjail.settings import Settings
from nixjail.spool import Queue

P = "/piston/api/v2"
RUN_KEYS = {"stdout", "stderr", "output", "code", "signal", "message", "status", "memory",
            "cpu_time", "wall_time"}
OK = StageResult(status="ok", exit_code=0, stdout="hi\n", cpu_time_ms=7, wall_time_ms=21,
                 memory_kib=1536)


@dataclass
class Played:
    """What the test's worker reports for one submission."""

    run: StageResult | None = None
    compile: StageResult | None = None
    error: str | None = None


class Worker:
    """Plays the runner: takes each run job as it is queued (the lease waits
    on the queue) and reports what `outcome` says for it."""

    def __init__(self, api: CompatApi) -> None:
        self.spool = api.spool
        self.outcome: Callable[[Submission], Played] = lambda _: Played(run=OK)
        self.seen: list[Submission] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            lease = self.spool.lease(Queue.run, "piston-test", wait_s=0.2)
            if lease is None:
                continue
            submission = self.spool.get(lease.submission_id)
            self.seen.append(submission)
            played = self.outcome(submission)
            if played.compile is not None:
                self.spool.report_stage(lease, "compile", played.compile)
            if played.run is not None:
                self.spool.report_stage(lease, "run", played.run)
            self.spool.complete(lease, error=played.error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


@dataclass
class Piston:
    api: CompatApi
    worker: Worker | None
    answers: list[Any] = field(default_factory=list)

    def execute(self, body: Any, *, token: str | None = ALICE, raw: bytes | None = None,
                content_type: str = "text/plain;charset=UTF-8") -> Any:
        """POST execute as Piston's JavaScript client does: JSON sent as text/plain."""
        data = raw if raw is not None else json.dumps(body).encode()
        return self.api.request("POST", f"{P}/execute", token=token, data=data,
                                headers={"Content-Type": content_type})

    def play(self, played: Played) -> None:
        """What the worker reports for every submission from now on."""
        assert self.worker is not None
        self.worker.outcome = lambda _: played

    def last(self) -> Submission:
        """The last submission the worker took, as the spool has it now."""
        assert self.worker is not None and self.worker.seen
        return self.api.spool.get(self.worker.seen[-1].id)


COMPILED = {"name": "cc", "shell_nix": "{}: 1", "main_file": "main.c",
            "compile_sh": "cc main.c", "run_sh": './a.out "$@"',
            "piston": {"language": "c", "version": "13.2.0", "aliases": ["gcc"]}}


def two_bashes() -> list[dict[str, Any]]:
    """The fixture's bash 5.2.0 and a 5.10.0 beside it: newer as a version,
    older as a string."""
    first = fixture_environments()[0]
    newer = {**first, "name": "bash-next", "aliases": [], "judge0": None, "codapi": None,
             "piston": {"language": "bash", "version": "5.10.0", "aliases": ["sh"]}}
    return [first, newer, COMPILED]


@pytest.fixture
def make(compat_api: Callable[..., CompatApi]) -> Iterator[Callable[..., Piston]]:
    workers: list[Worker] = []

    def start(*, piston: dict[str, Any] | None = None, worker: bool = True,
              **kwargs: Any) -> Piston:
        compat = {"piston": {"enabled": True, **(piston or {})}, **kwargs.pop("compat", {})}
        api = compat_api(compat=compat, **kwargs)
        played = Worker(api) if worker else None
        if played is not None:
            workers.append(played)
        return Piston(api=api, worker=played)

    yield start
    for played in workers:  # before their APIs stop (compat_api's teardown comes after)
        played.stop()


@pytest.fixture
def piston(make: Callable[..., Piston]) -> Piston:
    return make(environments=two_bashes())


def bash(source: str = "echo hi", **fields: Any) -> dict[str, Any]:
    return {"language": "bash", "version": "5.2.0", "files": [{"content": source}], **fields}


def test_runtimes_are_the_catalogs(piston: Piston) -> None:
    answer = piston.api.request("GET", f"{P}/runtimes")
    assert answer.status_code == 200
    assert answer.json() == [
        {"language": "bash", "version": "5.2.0", "aliases": ["sh"]},
        {"language": "bash", "version": "5.10.0", "aliases": ["sh"]},
        {"language": "c", "version": "13.2.0", "aliases": ["gcc"]}]


def test_the_fixture_catalog_offers_bash(make: Callable[..., Piston]) -> None:
    api = make(worker=False).api
    assert api.request("GET", f"{P}/runtimes").json() == [
        {"language": "bash", "version": "5.2.0", "aliases": ["sh"]}]


def test_a_text_plain_body_runs_and_answers_in_pistons_shape(piston: Piston) -> None:
    answer = piston.execute(bash("echo hi", stdin="in", args=["a", "b c"]))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "language": "bash", "version": "5.2.0",
        "run": {"stdout": "hi\n", "stderr": "", "output": "hi\n", "code": 0, "signal": None,
                "message": None, "status": None, "memory": 1536 * 1024, "cpu_time": 7,
                "wall_time": 21}}
    stored = piston.last()
    assert stored.status is SubmissionStatus.done
    assert stored.request.environment == "bash" and stored.owner == "alice"
    assert stored.request.file_bytes() == {"main.sh": b"echo hi"}
    # Piston ends stdin with a newline when it has none.
    assert stored.request.stdin == "in\n"
    assert stored.request.args == ["a", "b c"]
    # The submission is one like any other: /v1 lists it for its tenant.
    listed = piston.api.request("GET", "/v1/submissions").json()
    assert stored.id in {item["id"] for item in listed["items"]}


def test_application_json_is_taken_too(piston: Piston) -> None:
    answer = piston.execute(bash(), content_type="application/json")
    assert answer.status_code == 200 and answer.json()["run"]["stdout"] == "hi\n"


@pytest.mark.parametrize(("version", "language", "chosen"), [
    (None, "bash", "5.10.0"),       # the newest as a version: "5.2.0" > "5.10.0" as strings
    ("*", "bash", "5.10.0"),
    ("5.x", "bash", "5.10.0"),
    ("5", "bash", "5.10.0"),
    ("5.2.0", "bash", "5.2.0"),
    ("~5.2", "bash", "5.2.0"),
    ("<5.10", "bash", "5.2.0"),
    (">=5.3.0 <6", "bash", "5.10.0"),
    ("5.2.0 || 5.10.0", "bash", "5.10.0"),
    (None, "sh", "5.10.0"),         # an alias, without a version: what the client sends
    ("5.2", "sh", "5.2.0"),
    (None, "gcc", "13.2.0"),
])
def test_versions_and_aliases_pick_the_newest_match(piston: Piston, version: str | None,
                                                    language: str, chosen: str) -> None:
    body = {"language": language, "files": [{"content": "true"}]}
    if version is not None:
        body["version"] = version
    if language == "gcc":
        piston.play(Played(compile=OK, run=OK))
    answer = piston.execute(body)
    assert answer.status_code == 200, answer.text
    expected_language = "c" if language == "gcc" else "bash"
    assert (answer.json()["language"], answer.json()["version"]) == (expected_language, chosen)
    names = {"5.2.0": "bash", "5.10.0": "bash-next", "13.2.0": "cc"}
    assert piston.last().request.environment == names[chosen]


@pytest.mark.parametrize(("body", "message"), [
    ({"language": "cobol", "version": "1.0", "files": [{"content": "x"}]},
     "cobol-1.0 runtime is unknown"),
    ({"language": "cobol", "files": [{"content": "x"}]}, "cobol-* runtime is unknown"),
    ({"language": "bash", "version": "6.x", "files": [{"content": "x"}]},
     "bash-6.x runtime is unknown"),
    ({"language": "BASH", "version": "5.2.0", "files": [{"content": "x"}]},
     "BASH-5.2.0 runtime is unknown"),
    ({"language": "bash", "version": "banana", "files": [{"content": "x"}]},
     "bash-banana runtime is unknown: version 'banana' is not a version or a range of "
     "versions"),
])
def test_an_unknown_runtime_is_refused_as_piston_does(piston: Piston, body: dict[str, Any],
                                                      message: str) -> None:
    answer = piston.execute(body)
    assert answer.status_code == 400
    assert answer.json() == {"message": message}
    assert piston.worker is not None and not piston.worker.seen


@pytest.mark.parametrize(("raw", "content_type", "status", "message"), [
    (b"{", "text/plain", 400, "the body is not valid JSON"),
    (b"", "text/plain", 400, "the body is not valid JSON"),
    (b'{"language": NaN}', "text/plain", 400, "NaN is not a JSON value"),
    (b"[" * 100_000 + b"]" * 100_000, "text/plain", 400, "nested too deeply"),
    (b"\xff\xfe{}", "text/plain", 400, "the body is not valid JSON"),
    (b"[]", "text/plain", 400, "the body must be a JSON object"),
    (b'"bash"', "application/json", 400, "the body must be a JSON object"),
    (b"{}", "application/x-www-form-urlencoded", 415,
     "the body must be application/json or text/plain, not application/x-www-form-urlencoded"),
    (b"{}", "text/plain; charset=latin-1", 415, "JSON bodies are UTF-8"),
])
def test_malformed_bodies_are_refused_in_pistons_shape(piston: Piston, raw: bytes,
                                                       content_type: str, status: int,
                                                       message: str) -> None:
    answer = piston.execute(None, raw=raw, content_type=content_type)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"message"}
    assert message in answer.json()["message"], answer.json()


@pytest.mark.parametrize(("fields", "message"), [
    ({"language": None}, "language is required as a string"),
    ({"language": 5}, "language is required as a string"),
    ({"language": ""}, "language is required as a string"),
    ({"version": 5.2}, "version must be a string"),
    ({"files": None}, "files is required as an array"),
    ({"files": {"content": "x"}}, "files is required as an array"),
    ({"files": []}, "files must hold at least one file"),
    ({"files": ["echo hi"]}, "files[0] must be an object with a content"),
    ({"files": [{"name": "main.sh"}]}, "files[0].content is required as a string"),
    ({"files": [{"content": 7}]}, "files[0].content is required as a string"),
    ({"files": [{"content": "x", "encoding": "utf16"}]},
     "files[0].encoding must be one of utf8, base64, hex"),
    ({"files": [{"content": "x"}, {"content": "y", "name": "../escape"}]},
     "files[1].name '../escape': file name must not contain empty, '.' or '..' components"),
    ({"files": [{"content": "x"}, {"content": "y", "name": "/etc/passwd"}]},
     "files[1].name '/etc/passwd': file name must be relative"),
    ({"files": [{"content": "x"}, {"content": "y", "name": 3}]},
     "files[1].name must be a string"),
    ({"files": [{"content": "x"}, {"content": "y", "name": "a"}, {"content": "z", "name": "a"}]},
     "files[2].name 'a' is given twice"),
    ({"files": [{"content": "x"}, {"content": "y", "name": "main.sh"}]},
     "files[1].name 'main.sh' is the name the first file takes"),
    ({"files": [{"content": "x"}, {"content": "y", "name": "a"}, {"content": "z",
                                                                  "name": "a/b"}]},
     "'a/b' lies under 'a', which is a file"),
    ({"files": [{"content": "x"}, {"content": "!!", "encoding": "base64"}]},
     "files[1].content is not valid base64"),
    ({"files": [{"content": "x"}, {"content": "abc", "encoding": "hex"}]},
     "files[1].content is not valid hex"),
    ({"stdin": ["a"]}, "stdin must be a string"),
    ({"args": "1 2 3"}, "args must be an array of strings"),
    ({"args": [1, 2]}, "args must be an array of strings"),
    ({"args": ["a\u0000b"]}, "an argument must not contain NUL bytes"),
    ({"run_timeout": "3000"}, "If specified, run_timeout must be a number"),
    ({"run_timeout": True}, "If specified, run_timeout must be a number"),
    ({"compile_memory_limit": -5}, "compile_memory_limit must be non-negative"),
])
def test_bad_fields_are_refused_naming_the_field(piston: Piston, fields: dict[str, Any],
                                                 message: str) -> None:
    answer = piston.execute(bash(**fields))
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"message"}
    assert message in answer.json()["message"], answer.json()
    assert piston.worker is not None and not piston.worker.seen


def test_every_fault_is_named_at_once(piston: Piston) -> None:
    answer = piston.execute({"language": 1, "files": [], "run_timeout": "x"})
    assert answer.json() == {"message": "language is required as a string; files must hold "
                             "at least one file (the first is the one run); If specified, "
                             "run_timeout must be a number"}


def test_files_in_every_encoding_lie_beside_the_first(piston: Piston) -> None:
    answer = piston.execute(bash("", files=[
        {"name": "whatever.sh", "content": base64.b64encode(b"cat data/in.txt").decode(),
         "encoding": "base64"},
        {"name": "data/in.txt", "content": "42\n", "encoding": "utf8"},
        {"name": "blob.bin", "content": "ff00fe", "encoding": "hex"},
        {"name": "url.bin", "content": base64.urlsafe_b64encode(b"\xfb\xff").decode()
         .rstrip("="), "encoding": "base64"},
        {"content": "no name"}]))
    assert answer.status_code == 200, answer.text
    # The first file is the one run, under the runtime's name for it.
    assert piston.last().request.file_bytes() == {
        "main.sh": b"cat data/in.txt", "data/in.txt": b"42\n", "blob.bin": b"\xff\x00\xfe",
        "url.bin": b"\xfb\xff", "file4.code": b"no name"}


def test_limits_map_onto_the_stages(piston: Piston) -> None:
    answer = piston.execute(bash(run_timeout=2500, compile_timeout=10000, run_cpu_time=1500,
                                 run_memory_limit=64 * 1024 * 1024 + 1,
                                 compile_memory_limit=-1))
    assert answer.status_code == 200, answer.text
    limits = piston.last().limits
    assert (limits.run.wall_time_s, limits.run.cpu_time_s, limits.run.memory_mib) == \
        (2.5, 1.5, 65)
    assert limits.compile.wall_time_s == 10
    # -1 (and 0) are the server's defaults, as Piston's own -1 is "no limit of mine".
    assert limits.compile.memory_mib == piston.api.settings.limits_default.compile.memory_mib
    defaults = piston.execute(bash(run_timeout=0, run_memory_limit=-1))
    assert defaults.status_code == 200
    run_default = piston.api.settings.limits_default.run
    assert (piston.last().limits.run.wall_time_s, piston.last().limits.run.memory_mib) == \
        (run_default.wall_time_s, run_default.memory_mib)


@pytest.mark.parametrize(("fields", "message"), [
    ({"run_timeout": 60_001}, "run_timeout cannot exceed the configured limit of 60000"),
    ({"compile_timeout": 120_000.5},
     "compile_timeout cannot exceed the configured limit of 120000"),
    ({"run_cpu_time": 10**400}, "run_cpu_time cannot exceed the configured limit of 60000"),
    ({"run_memory_limit": 2048 * 1024 * 1024 + 1},
     "run_memory_limit cannot exceed the configured limit of 2147483648"),
    ({"compile_cpu_time": 1e300}, "compile_cpu_time cannot exceed the configured limit"),
])
def test_limits_above_the_maxima_are_refused(piston: Piston, fields: dict[str, Any],
                                             message: str) -> None:
    answer = piston.execute(bash(**fields))
    assert answer.status_code == 400
    assert message in answer.json()["message"], answer.json()


def test_the_maxima_are_the_operators(make: Callable[..., Piston]) -> None:
    settings = Settings()
    most, default = settings.limits_max.model_dump(), settings.limits_default.model_dump()
    most["run"].update(wall_time_s=2, cpu_time_s=2)
    default["run"].update(wall_time_s=1, cpu_time_s=1)
    piston = make(limits_max=most, limits_default=default)
    assert piston.execute(bash(run_timeout=2000)).status_code == 200
    refused = piston.execute(bash(run_timeout=3000))
    assert refused.json() == {"message": "run_timeout cannot exceed the configured limit "
                              "of 2000"}


@pytest.mark.parametrize(("run", "expected"), [
    (StageResult(status="nonzero_exit", exit_code=3, stderr="oops\n", stdout="half\n"),
     {"code": 3, "signal": None, "status": "RE", "message": "Exited with error status 3",
      "output": "half\noops\n"}),
    (StageResult(status="signaled", signal=11),
     {"code": None, "signal": "SIGSEGV", "status": "SG", "message": "Caught fatal signal 11"}),
    (StageResult(status="time_limit", wall_time_ms=3001),
     {"code": None, "signal": "SIGKILL", "status": "TO", "message": "Time limit exceeded",
      "wall_time": 3001}),
    (StageResult(status="memory_limit", signal=9),
     {"code": None, "signal": "SIGKILL", "status": "SG", "message": "Memory limit exceeded"}),
    (StageResult(status="output_limit", stdout_truncated=True),
     {"signal": "SIGKILL", "status": "OL", "message": "stdout length exceeded"}),
    (StageResult(status="output_limit", stderr_truncated=True),
     {"signal": "SIGKILL", "status": "EL", "message": "stderr length exceeded"}),
    (StageResult(status="ok", exit_code=0, stdout=base64.b64encode(b"\xffok").decode(),
                 stdout_encoding="base64"),
     {"code": 0, "stdout": "\ufffdok", "status": None}),
])
def test_each_end_of_a_run_in_pistons_terms(piston: Piston, run: StageResult,
                                            expected: dict[str, Any]) -> None:
    piston.play(Played(run=run))
    answer = piston.execute(bash())
    assert answer.status_code == 200
    got = answer.json()["run"]
    assert set(got) == RUN_KEYS
    assert {key: got[key] for key in expected} == expected, got


def test_a_compiled_runtime_answers_compile_too(piston: Piston) -> None:
    piston.play(Played(compile=StageResult(status="ok", exit_code=0, stderr="warning\n"),
                       run=OK))
    answer = piston.execute({"language": "c", "files": [{"content": "int main;"}]}).json()
    assert set(answer) == {"language", "version", "compile", "run"}
    assert set(answer["compile"]) == RUN_KEYS and answer["compile"]["stderr"] == "warning\n"
    assert answer["run"]["stdout"] == "hi\n"
    assert piston.last().request.file_bytes() == {"main.c": b"int main;"}
    # A compile that fails: Piston's run is then the compile stage.
    piston.play(Played(compile=StageResult(status="nonzero_exit", exit_code=1,
                                           stderr="main.c: error\n")))
    failed = piston.execute({"language": "c", "files": [{"content": "int main("}]}).json()
    assert failed["compile"]["status"] == "RE" and failed["compile"]["code"] == 1
    assert failed["run"] == failed["compile"]


def test_an_interpreted_runtime_has_no_compile(piston: Piston) -> None:
    assert "compile" not in piston.execute(bash()).json()


def test_nixjails_own_failure_is_pistons_internal_error(piston: Piston) -> None:
    piston.play(Played(error="the container could not start"))
    answer = piston.execute(bash())
    assert answer.status_code == 200
    assert answer.json()["run"] == {"stdout": "", "stderr": "", "output": "", "code": None,
                                    "signal": None, "message": "the container could not start",
                                    "status": "XX", "memory": None, "cpu_time": None,
                                    "wall_time": None}


def test_an_environment_that_did_not_build_is_an_internal_error(piston: Piston) -> None:
    answer = piston.execute(bash())
    assert answer.status_code == 200
    # What the cache builder leaves when the shell.nix fails to build.
    failed = piston.last().model_copy(deep=True)
    failed.status = SubmissionStatus.failed
    failed.stages.dependencies = StageResult(status="nonzero_exit", exit_code=1,
                                             stderr="error: undefined variable\n")
    failed.stages.run = StageResult.skipped()
    entry = piston.api.settings.catalog()["bash"]
    run = render(entry, failed)["run"]
    assert (run["status"], run["message"], run["code"]) == (
        "XX", "the environment could not be built", None)


def test_a_run_that_does_not_end_in_time_is_cancelled(make: Callable[..., Piston]) -> None:
    piston = make(worker=False, api={"max_wait_s": 0.5})
    answer = piston.execute(bash())
    assert answer.status_code == 504
    message = answer.json()["message"]
    assert "did not end within 0.5 s" in message, message
    submission_id = message.split("submission ")[1].split(" ")[0]
    assert piston.api.spool.get(submission_id).status is SubmissionStatus.cancelled
    assert not piston.api.spool.queued(Queue.run)


def test_no_wait_slot_makes_no_submission(make: Callable[..., Piston]) -> None:
    piston = make(worker=False, api={"max_waiters": 0})
    answer = piston.execute(bash())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.json() == {"message": "too many runs are being waited for; try again "
                             "shortly"}
    assert piston.api.spool.list()[0] == []


def test_a_full_queue_is_503_with_retry_after(make: Callable[..., Piston]) -> None:
    piston = make(worker=False, api={"max_queued": 1})
    piston.api.request("POST", "/v1/submissions", json={"environment": "bash",
                                                        "files": {"main.sh": "true"}})
    answer = piston.execute(bash())
    assert answer.status_code == 503, answer.text
    assert answer.json()["message"].startswith("the queue is full")
    assert int(answer.headers["Retry-After"]) > 0


def test_tokens_and_anonymous_callers(make: Callable[..., Piston]) -> None:
    closed = make(worker=False)
    refused = closed.execute(bash(), token=None)
    assert refused.status_code == 401 and set(refused.json()) == {"message"}
    assert "Authorization: Bearer TOKEN" in refused.json()["message"]
    assert closed.api.request("GET", f"{P}/runtimes", token="nobody").json() == {
        "message": "the token is not known"}
    piston = make(piston={"anonymous": True}, compat={"anonymous_requests_per_minute": 2})
    assert piston.api.request("GET", f"{P}/runtimes", token=None).status_code == 200
    for _ in range(2):
        assert piston.execute(bash(), token=None).status_code == 200
    assert piston.last().owner == "anonymous"
    limited = piston.execute(bash(), token=None)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "limited to 2 a minute" in limited.json()["message"]
    # A token still acts for its tenant, unlimited; a wrong one is refused.
    assert piston.execute(bash(), token=BOB).status_code == 200
    assert piston.last().owner == "bob"
    assert piston.execute(bash(), token="forged").status_code == 401


def test_without_a_tokens_file_no_token_is_needed(make: Callable[..., Piston]) -> None:
    piston = make(auth=False)
    assert piston.execute(bash(), token=None).json()["run"]["stdout"] == "hi\n"


def test_unknown_routes_and_methods_answer_in_pistons_shape(piston: Piston) -> None:
    missing = piston.api.request("GET", f"{P}/packages")
    assert missing.status_code == 404 and set(missing.json()) == {"message"}
    wrong = piston.api.request("GET", f"{P}/execute")
    assert wrong.status_code == 405 and set(wrong.json()) == {"message"}
    too_big = piston.execute(None, raw=b" " * (piston.api.settings.api.max_body_bytes + 1))
    assert too_big.status_code == 413 and "larger than" in too_big.json()["message"]


def test_beside_judge0_each_prefix_keeps_its_shape(make: Callable[..., Piston]) -> None:
    api = make(worker=False, compat={"judge0": {"enabled": True}}).api
    assert api.request("GET", "/piston/nothing").json() == {"message": "nothing at "
                                                            "/piston/nothing"}
    assert set(api.request("GET", "/judge0/nothing").json()) == {"error"}
    assert api.request("GET", f"{P}/runtimes").status_code == 200


def test_disabled_front_end_has_no_routes(make: Callable[..., Piston]) -> None:
    api = make(piston={"enabled": False}, worker=False).api
    answer = api.request("GET", f"{P}/runtimes")
    assert answer.status_code == 404 and "errors" in answer.json()


def test_versions_compare_as_versions_not_strings() -> None:
    versions = ["3.9.0", "3.10.0", "3.12.1", "3.13.0-rc1", "2.7.18", "latest"]
    assert newest(versions, None) == "3.12.1"           # a prerelease only when named
    assert newest(versions, ">=3.13.0-rc1") == "3.13.0-rc1"
    assert newest(versions, "^3.9") == "3.12.1"
    assert newest(versions, "~3.9") == "3.9.0"
    assert newest(versions, "3.9 - 3.10") == "3.10.0"
    assert newest(versions, "<=3.10") == "3.10.0"
    assert newest(versions, ">3.12.1") is None
    assert newest(versions, "latest") == "latest"       # a version that is no version
    assert newest(["0.2.3", "0.2.9", "0.3.0"], "^0.2.3") == "0.2.9"
    assert newest(["5.2", "5.10"], None) == "5.10"
    assert newest(["latest"], None) == "latest"
    with pytest.raises(ValueError, match="not a version or a range of versions"):
        newest(versions, "3.x.y")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5)
FILE = st.fixed_dictionaries({"content": st.text() | JSON_VALUES}, optional={
    "name": st.text() | JSON_VALUES,
    "encoding": st.sampled_from(["utf8", "base64", "hex", "latin1"]) | JSON_VALUES})
FIELDS = {
    "language": st.sampled_from(["bash", "sh", "c", "gcc", "cobol"]) | JSON_VALUES,
    "version": st.sampled_from(["5.2.0", "*", "5.x", "^5", "x.y", "6"]) | st.text()
    | JSON_VALUES,
    "files": st.lists(FILE, max_size=3) | JSON_VALUES,
    "stdin": st.text() | JSON_VALUES,
    "args": st.lists(st.text(), max_size=3) | JSON_VALUES,
    **{name: st.integers(-2, 200_000) | st.floats() | JSON_VALUES for name in (
        "compile_timeout", "run_timeout", "compile_cpu_time", "run_cpu_time",
        "compile_memory_limit", "run_memory_limit")},
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Piston]:
    api, stop = start_compat_api(tmp_path_factory.mktemp("fuzz"), environments=two_bashes(),
                                 compat={"piston": {"enabled": True}})
    worker = Worker(api)
    yield Piston(api=api, worker=worker)
    worker.stop()
    stop()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({}, optional=FIELDS))
def test_no_body_gets_a_5xx(shared: Piston, body: dict[str, Any]) -> None:
    answer = shared.execute(None, raw=json.dumps(body).encode())
    assert answer.status_code in (200, 400), (body, answer.text)
    got = answer.json()
    if answer.status_code == 400:
        assert set(got) == {"message"} and got["message"], got
    else:
        assert {"language", "version", "run"} <= set(got) and set(got["run"]) == RUN_KEYS


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_no_bytes_get_a_5xx(shared: Piston, raw: bytes) -> None:
    answer = shared.execute(None, raw=raw)
    assert answer.status_code in (200, 400), (raw, answer.text)
    assert isinstance(answer.json(), dict)
