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

from jail import JAIL_HOME, JAIL_OUT, JAIL_TOOLS, Bind, JailSpec, Mount
from protocol import (
    Emitter,
    Job,
    JobError,
    LineReader,
    StageResult,
    parse_job,
    skipped,
)
from reaper import Reaper
from stages import KILL_DEADLINE, Outcome, StageMeter, run_jailed
from workspace import Workspace, adopt_env_script, image_store, prepare, store_mounts

EXIT_OK = 0
EXIT_FAILED = 70  # EX_SOFTWARE: init itself failed; the runner marks the submission error
JOB_WAIT_S = 60.0  # how long init waits for the job line before giving up
DEFAULT_NSJAIL = "/usr/local/bin/nsjail"
DEFAULT_JAIL_UID = 1000
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


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
        self.deadline = time.monotonic() + JOB_WAIT_S

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
        env_script: str | None = None
        if environment.kind == "prebuilt":
            script = environment.env_script
            if script.startswith("/"):
                if not script.startswith("/nix/store/") or not os.path.isfile(script):
                    raise InitFailure(f"env_script {script!r} is not a file in /nix/store")
                env_script = script
            else:
                env_script = f"{JAIL_TOOLS}/env.sh"
        stages = (["dependencies"] if environment.kind == "build" else []) + ["compile", "run"]
        memory_cgroup = own_memory_cgroup()
        cpu_cgroup = own_cpu_cgroup()
        skip_rest = False
        for stage in stages:
            if skip_rest or (stage == "compile" and not job.compile_sh):
                self.emitter.emit("stage_finished", stage=stage, result=skipped(stage).to_json())
                continue
            if job.handshake:
                self.handshake(stage)
            if time.monotonic() >= self.deadline:
                raise InitFailure(f"deadline of {job.deadline_s:g} s passed before stage {stage}")
            self.emitter.emit("stage_started", stage=stage)
            limits = job.limits[stage]
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
                else:
                    env_script = f"{JAIL_TOOLS}/env.sh"
            elif environment.kind == "prebuilt":
                mounts += [Bind(path, path) for path in store_mounts()]
            elif os.path.isdir("/nix/store"):
                mounts.append(Bind("/nix/store", "/nix/store"))
            if env_script and stage != "dependencies":
                base_env["NIXJAIL_ENV_SCRIPT"] = env_script
            spec = JailSpec(
                nsjail=nsjail,
                limits=limits,
                work_dir=space.work_dir,
                tools_dir=space.tools,
                etc_dir=space.etc,
                log_fd=-1,
                outside_uid=uid,
                outside_gid=gid,
                memory_cgroup_limited=bool(memory_cgroup and memory_cgroup.limit_bytes()),
                env=base_env,
                mounts=mounts,
                system_dirs=not own_tools,
            )
            command = ["/bin/bash", "--noprofile", "--norc", f"{JAIL_TOOLS}/pid1.sh", stage]
            outcome = run_jailed(
                spec,
                command,
                stdin_path=space.stdin if stage == "run" else None,
                reaper=self.reaper,
                deadline=self.deadline,
                meter=StageMeter(cpu_cgroup, memory_cgroup),
            )
            result = outcome.result
            if stage == "dependencies":
                result.cached = False
                if result.status == "ok":
                    self._adopt(space, result)
            self.emitter.emit("stage_finished", stage=stage, result=result.to_json())
            self._check_interrupted(outcome, job)
            if stage != "run" and result.status != "ok":
                skip_rest = True
        return EXIT_OK

    @staticmethod
    def _adopt(space: Workspace, result: StageResult) -> None:
        problem = adopt_env_script(space)
        if problem:
            result.status = "error"
            result.stderr += f"\nnixjail: {problem}\n"

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
