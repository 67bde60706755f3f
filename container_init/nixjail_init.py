"""nixjail container init: PID 1 of a submission's container.

Reads one job (a JSON line) on stdin, runs the dependencies, compile and run stages each in
nsjail, and writes one JSON line per event on stdout. See docs/container-init.md.

Run as `python3 -I -u nixjail_init.py`; standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

# -I drops the script's directory from sys.path; the sibling modules live there, and
# the jail kit beside this directory (the image's /opt/nixjail/jailkit) or, in a
# checkout, in the Python package (src/nixjail/jailkit). Appended: stdlib comes first.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "src", "nixjail"))

from jailkit.cgroup import own_cpu_cgroup, own_memory_cgroup

import checkers
from jail import JAIL_HOME, JAIL_OUT, JAIL_TOOLS, Bind, JailSpec, Mount
from outputs import add_note, collect_output_files
from protocol import (
    Case,
    CaseResult,
    Emitter,
    Job,
    JobError,
    Limits,
    LineReader,
    StageResult,
    parse_job,
    skipped,
)
from reaper import Reaper
from stages import KILL_DEADLINE, Outcome, StageMeter, run_jailed
from workspace import (
    Workspace,
    adopt_env_script,
    fresh_case_dir,
    fresh_check_dir,
    image_store,
    prepare,
    store_mounts,
    write_args,
    write_private,
)

EXIT_OK = 0
EXIT_FAILED = 70  # EX_SOFTWARE: init itself failed; the runner marks the submission error
JOB_WAIT_S = 60.0  # how long init waits for the job line before giving up
DEFAULT_NSJAIL = "/usr/local/bin/nsjail"
DEFAULT_JAIL_UID = 1000
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# A case's verdict from its run's status; "ok" leaves it to the checker.
STATUS_VERDICTS = {
    "time_limit": "time_limit", "memory_limit": "memory_limit",
    "output_limit": "output_limit", "nonzero_exit": "runtime_error",
    "signaled": "runtime_error", "error": "error", "skipped": "skipped",
}
# The most of a checker's stdout kept as the case's message.
MESSAGE_CHARS = 4096


class InitFailure(Exception):
    """Init cannot go on; the message goes into the init_failed event."""


def log(message: str) -> None:
    print(f"nixjail-init: {message}", file=sys.stderr, flush=True)


def find_nsjail() -> str:
    candidate = os.environ.get("NIXJAIL_NSJAIL") or (
        DEFAULT_NSJAIL if os.path.exists(DEFAULT_NSJAIL) else shutil.which("nsjail")
    )
    if not candidate or not os.access(candidate, os.X_OK):
        raise InitFailure(f"nsjail not found or not executable ({candidate or 'nsjail'})")
    return candidate


def jail_ids() -> tuple[int, int]:
    """The uid/gid outside the jail that the jail user maps to."""
    if os.geteuid() != 0:
        # An unprivileged user namespace can only map the creator's own ids.
        return os.geteuid(), os.getegid()
    uid = int(os.environ.get("NIXJAIL_JAIL_UID", DEFAULT_JAIL_UID))
    return uid, uid


class Init:
    def __init__(self, emitter: Emitter, reaper: Reaper, reader: LineReader) -> None:
        self.emitter = emitter
        self.reaper = reaper
        self.reader = reader
        # A warm pool's container waits long for its job; the runner says how long.
        self.deadline = time.monotonic() + float(
            os.environ.get("NIXJAIL_JOB_WAIT_S") or JOB_WAIT_S)

    def read_line(self, what: str) -> bytes:
        """Wait for one stdin line until the deadline, a signal, or EOF."""
        while True:
            if self.reaper.terminate_signal is not None:
                raise InitFailure(f"terminated by signal {self.reaper.terminate_signal}")
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise InitFailure(f"deadline passed while waiting for {what}")
            line = self.reader.readline(remaining, self.reaper.wake_fd)
            if line is None:
                self.reaper.drain_wakeups()
                self.reaper.reap()
                continue
            if line.strip():
                return line
            if self.reader.eof:
                raise InitFailure(f"stdin closed while waiting for {what} (runner gone)")

    def handshake(self, stage: str) -> None:
        # What the container holds before the stage (init, files in the tmpfs,
        # a private store) lets the runner give the stage exactly its own limit.
        memory_cgroup = own_memory_cgroup()
        in_use = memory_cgroup.usage_bytes() if memory_cgroup else None
        self.emitter.emit("stage_ready", stage=stage,
                          memory_in_use_kib=None if in_use is None else in_use // 1024)
        line = self.read_line(f"the go for stage {stage}")
        if not _is_go(line):
            raise InitFailure(f"expected {{\"go\": true}} before stage {stage}, got {line[:200]!r}")

    def run(self) -> int:
        job_line = self.read_line("the job")
        try:
            job = parse_job(job_line)
        except JobError as exc:
            raise InitFailure(str(exc)) from exc
        self.deadline = time.monotonic() + job.deadline_s
        nsjail = find_nsjail()
        uid, gid = jail_ids()
        work_dir = Path(os.environ.get("NIXJAIL_WORK_DIR", JAIL_HOME))
        state_dir = Path(os.environ.get("NIXJAIL_STATE_DIR") or "/tmp")
        try:
            space = prepare(job, work_dir, state_dir, uid, gid)
        except (OSError, JobError) as exc:
            raise InitFailure(f"cannot prepare the jails' files: {exc}") from exc
        try:
            return self.run_stages(job, space, nsjail, uid, gid)
        finally:
            space.cleanup()

    def run_stages(self, job: Job, space: Workspace, nsjail: str, uid: int, gid: int) -> int:
        environment = job.environment
        self.job, self.space, self.nsjail, self.uid, self.gid = job, space, nsjail, uid, gid
        self.env_script: str | None = None
        if environment.kind == "prebuilt":
            script = environment.env_script
            if script.startswith("/"):
                if not script.startswith("/nix/store/") or not os.path.isfile(script):
                    raise InitFailure(f"env_script {script!r} is not a file in /nix/store")
                self.env_script = script
            else:
                self.env_script = f"{JAIL_TOOLS}/env.sh"
        elif environment.kind == "build":
            self.env_script = f"{JAIL_TOOLS}/env.sh"  # once the dependencies stage made it
        stages = (["dependencies"] if environment.kind == "build" else []) + ["compile", "run"]
        self.memory_cgroup = own_memory_cgroup()
        self.cpu_cgroup = own_cpu_cgroup()
        skip_rest = False
        for stage in stages:
            if stage == "run" and job.tests is not None:
                self.run_cases(job.tests, skip=skip_rest)
                continue
            if skip_rest or (stage == "compile" and not job.compile_sh):
                self.emitter.emit("stage_finished", stage=stage, result=skipped(stage).to_json())
                continue
            if job.handshake:
                self.handshake(stage)
            self._before(stage)
            self.emitter.emit("stage_started", stage=stage)
            write_args(space, stage, job.args if stage == "run" else [])
            outcome = self.jail(stage, job.limits[stage], work_dir=space.work_dir,
                                stdin_path=space.stdin if stage == "run" else None)
            result = outcome.result
            if stage == "dependencies":
                result.cached = False
                if result.status == "ok":
                    self._adopt(space, result)
            if stage == "run" and job.output_files:
                self._collect_files(result, space.work_dir)
            self.emitter.emit("stage_finished", stage=stage, result=result.to_json())
            self._check_interrupted(outcome, job)
            if stage != "run" and result.status != "ok":
                skip_rest = True
        return EXIT_OK

    def _before(self, what: str) -> None:
        if time.monotonic() >= self.deadline:
            raise InitFailure(f"deadline of {self.job.deadline_s:g} s passed before {what}")

    def jail(self, stage: str, limits: Limits, *, work_dir: Path,
             stdin_path: Path | None, script: str | None = None) -> Outcome:
        """Run one stage's script (`script`, default the stage's own) in its jail."""
        environment, space = self.job.environment, self.space
        base_env = {
            "PATH": BASE_PATH,
            "LANG": "C.UTF-8",
            "USER": "nixjail",
            "LOGNAME": "nixjail",
            "SHELL": "/bin/bash",
            "HOME": JAIL_HOME,
            "TMPDIR": "/tmp",
        }
        mounts: list[Mount] = []
        # Compile and run see the environment and nixjail's own bash and env, nothing
        # of the image; the build's dependencies stage runs the image's nix, and kind
        # "none" (standalone, tests) the image's bash: those keep SYSTEM_DIRS.
        own_tools = stage != "dependencies" and environment.kind in ("build", "prebuilt")
        if own_tools:
            mounts += [Bind(str(space.bash), "/bin/bash"), Bind(str(space.bash), "/bin/sh"),
                       Bind(str(space.env_command), "/usr/bin/env")]
        if environment.kind == "build":
            writable = stage == "dependencies"
            mounts.append(Bind(str(space.nix), "/nix", writable))
            # The image's own tools (a Nix-built image keeps them in the store).
            mounts += [Bind(path, path) for path in image_store()]
            if writable:
                mounts.append(Bind(str(space.out), JAIL_OUT, writable=True))
                mounts += [
                    Bind(os.path.realpath(path), path)
                    for path in nix_path_dirs(environment.nix_path)
                ]
                base_env.update(NIX_CONF_DIR="/etc/nix", NIX_PATH=environment.nix_path)
        elif environment.kind == "prebuilt":
            mounts += [Bind(path, path) for path in store_mounts()]
        elif os.path.isdir("/nix/store"):
            mounts.append(Bind("/nix/store", "/nix/store"))
        if self.env_script and stage != "dependencies":
            base_env["NIXJAIL_ENV_SCRIPT"] = self.env_script
        spec = JailSpec(
            nsjail=self.nsjail,
            limits=limits,
            work_dir=work_dir,
            tools_dir=space.tools,
            etc_dir=space.etc,
            log_fd=-1,
            outside_uid=self.uid,
            outside_gid=self.gid,
            memory_cgroup_limited=bool(self.memory_cgroup and self.memory_cgroup.limit_bytes()),
            env=base_env,
            mounts=mounts,
            system_dirs=not own_tools,
        )
        command = ["/bin/bash", "--noprofile", "--norc", f"{JAIL_TOOLS}/pid1.sh",
                   script or stage]
        return run_jailed(
            spec,
            command,
            stdin_path=stdin_path,
            reaper=self.reaper,
            deadline=self.deadline,
            meter=StageMeter(self.cpu_cgroup, self.memory_cgroup),
            output_base64=self.job.output_base64 and stage != "dependencies",
        )

    # -- test cases -----------------------------------------------------------------

    def run_cases(self, cases: list[Case], *, skip: bool) -> None:
        """run.sh once per case, each on a fresh copy of the compiled work dir, each
        judged by its checker; with stop_on_failure, the cases after the first that
        is not accepted are skipped."""
        job = self.job
        if not skip and job.handshake:
            self.handshake("run")
        failed = False
        for index, case in enumerate(cases):
            if skip or (failed and job.stop_on_failure):
                verdict = "compile_error" if skip else "skipped"
                result = CaseResult(status="skipped", name=case.name, verdict=verdict)
                self.emitter.emit("case_finished", index=index, result=result.to_json())
                continue
            self._before(f"case {index}")
            self.emitter.emit("case_started", index=index)
            result, outcome = self.run_case(case)
            self.emitter.emit("case_finished", index=index, result=result.to_json())
            self._check_interrupted(outcome, job)
            failed = failed or result.verdict != "accepted"

    def run_case(self, case: Case) -> tuple[CaseResult, Outcome]:
        space = self.space
        try:
            case_dir = fresh_case_dir(space, case.files, self.uid, self.gid)
        except OSError as exc:
            # The compiled work dir and the case's files must fit beside it.
            reason = exc.strerror if exc.strerror else str(exc)
            return CaseResult(status="error", name=case.name, verdict="error",
                              stderr=f"nixjail: cannot lay out the case's work dir: {reason}"
                              "\n"), Outcome(StageResult(status="error"))
        try:
            stdin = space.root / "case-stdin"
            write_private(stdin, case.stdin, self.uid, self.gid)
            write_args(space, "run", case.args)
            outcome = self.jail("run", case.limits, work_dir=case_dir, stdin_path=stdin)
            result = CaseResult(**vars(outcome.result), name=case.name)
            result.verdict = STATUS_VERDICTS.get(result.status, "accepted")
            if result.verdict == "accepted" and not outcome.interrupted:
                self._judge(case, outcome.stdout, result)
            if self.job.output_files:
                self._collect_files(result, case_dir)
            return result, outcome
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)

    def _judge(self, case: Case, output: bytes, result: CaseResult) -> None:
        checker = case.checker
        if checker.kind != "custom":
            if case.expected_output is None:
                return  # nothing to compare with: a run that ended ok is accepted
            accepted, message = checkers.check(checker.kind, case.expected_output, output,
                                               abs_tol=checker.abs_tol,
                                               rel_tol=checker.rel_tol)
            result.verdict = "accepted" if accepted else "wrong_answer"
            result.message = message
            return
        # The custom checker: its own jail, on a directory holding only the three files.
        check_dir = fresh_check_dir(self.space, {
            "input": case.stdin, "expected_output": case.expected_output or b"",
            "output": output}, self.uid, self.gid)
        try:
            (self.space.tools / "check.sh").write_text(checker.check_sh or "")
            write_args(self.space, "check", ["input", "expected_output", "output"])
            outcome = self.jail("run", case.limits, work_dir=check_dir, stdin_path=None,
                                script="check")
        finally:
            # The next case's jail binds the tools dir too: it must not find
            # the checker (which may hold the answers) there.
            (self.space.tools / "check.sh").unlink(missing_ok=True)
            shutil.rmtree(check_dir, ignore_errors=True)
        checked = outcome.result
        text = checked.stdout if checked.stdout_encoding == "utf-8" else ""
        result.message = text[:MESSAGE_CHARS]
        if checked.status == "ok":
            result.verdict = "accepted"
        elif checked.status == "nonzero_exit" and checked.exit_code == 1:
            result.verdict = "wrong_answer"
        else:
            result.verdict = "checker_error"
            detail = checked.stderr if checked.stderr_encoding == "utf-8" else ""
            result.message = (f"the checker ended {checked.status} (exit code "
                              f"{checked.exit_code}, signal {checked.signal}): "
                              f"{(text or detail)[:MESSAGE_CHARS]}")

    def _collect_files(self, result: StageResult, work_dir: Path) -> None:
        files, left_out = collect_output_files(work_dir, self.job.output_files,
                                               self.job.max_output_file_bytes)
        result.files = files
        if left_out:
            add_note(result, "nixjail: output files left out, past the "
                     f"{self.job.max_output_file_bytes} bytes returned: {', '.join(left_out)}")

    @staticmethod
    def _adopt(space: Workspace, result: StageResult) -> None:
        problem = adopt_env_script(space)
        if problem:
            result.status = "error"
            add_note(result, f"nixjail: {problem}")

    def _check_interrupted(self, outcome: Outcome, job: Job) -> None:
        if outcome.interrupted == KILL_DEADLINE:
            raise InitFailure(f"deadline of {job.deadline_s:g} s passed")
        if outcome.interrupted:
            raise InitFailure(f"terminated by signal {self.reaper.terminate_signal}")


def _is_go(line: bytes) -> bool:
    try:
        return json.loads(line) == {"go": True}
    except ValueError:
        return False


def nix_path_dirs(nix_path: str) -> list[str]:
    """The local directories a NIX_PATH names, to mount read-only in the build jail."""
    dirs = []
    for entry in nix_path.split(":"):
        path = entry.partition("=")[2] if "=" in entry else entry
        if path.startswith("/") and not path.startswith("/nix/") and os.path.isdir(path):
            dirs.append(path)
    return dirs


def main() -> int:
    # Only protocol lines may reach the real stdout: keep it private, point fd 1 at stderr.
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    emitter = Emitter(protocol_fd)
    reaper = Reaper()
    init = Init(emitter, reaper, LineReader(0))
    try:
        code = init.run()
    except InitFailure as exc:
        log(str(exc))
        emitter.emit("init_failed", error=str(exc))
        code = EXIT_FAILED
    except Exception as exc:
        log(f"internal error: {exc!r}")
        emitter.emit("init_failed", error=f"internal error: {exc}")
        code = EXIT_FAILED
    emitter.emit("finished")
    reaper.reap()
    return code


if __name__ == "__main__":
    sys.exit(main())
