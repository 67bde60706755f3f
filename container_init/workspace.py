"""The directories init prepares for the jails: the work dir, /etc, the stage scripts, /nix."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jail import JAIL_GID, JAIL_HOME, JAIL_OUT, JAIL_TOOLS, JAIL_UID
from protocol import Job, JobError

NIX_CONF = """\
build-users-group =
sandbox = false
substituters =
experimental-features = nix-command
"""

# PID 1 of the jail ignores signals it has no handler for, so the stage shell runs as its
# child: then `kill -SEGV $$` or a crash kills the stage shell and shows as 128+N. This
# shell's own stderr goes to /dev/null so its "Segmentation fault" notices stay out of the
# stage's stderr; the stage shell gets the real stderr back.
PID1_SH = """\
exec 3>&2 2>/dev/null
/bin/bash --noprofile --norc /nixjail/stage.sh "$1" 2>&3 3>&-
exit $?
"""

# The stage shell: the toolchain environment, then the submission's script, sourced in the
# same shell (like nix-shell --run) so the environment's functions stay defined.
STAGE_SH = f"""\
__nixjail_script={JAIL_TOOLS}/$1.sh
set --
if [ -n "${{NIXJAIL_ENV_SCRIPT:-}}" ]; then
  . "$NIXJAIL_ENV_SCRIPT"
fi
unset NIXJAIL_ENV_SCRIPT
export HOME={JAIL_HOME} TMPDIR=/tmp TMP=/tmp TEMP=/tmp TEMPDIR=/tmp
cd {JAIL_HOME} || exit 1
. "$__nixjail_script"
"""

# Build the environment once: print-dev-env builds the shell's inputs and writes the script
# later stages source.
DEPENDENCIES_SH = f"""\
export HOME=/tmp  # nix's caches stay out of the work dir
nix --extra-experimental-features nix-command print-dev-env -L \\
  -f {JAIL_TOOLS}/shell.nix > {JAIL_OUT}/env.sh
"""


@dataclass
class Workspace:
    work_dir: Path
    root: Path  # init's private directory, never visible to a jail as a whole

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def tools(self) -> Path:
        return self.root / "tools"

    @property
    def nix(self) -> Path:
        return self.root / "nix"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def stdin(self) -> Path:
        return self.root / "stdin"

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def prepare(job: Job, work_dir: Path, state_dir: Path, uid: int, gid: int) -> Workspace:
    """Write the submission's files and init's scripts; uid/gid are the jail user outside."""
    work_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    space = Workspace(work_dir, Path(tempfile.mkdtemp(prefix="nixjail-init-", dir=state_dir)))

    for name, content in job.files.items():
        target = work_dir / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise JobError(f"file {name!r} clashes with another entry")
        # Executable, so a run.sh may call ./script directly.
        _write(target, content, 0o755)
    if os.geteuid() == 0:
        _chown_tree(work_dir, uid, gid)
    work_dir.chmod(0o755)

    _write(space.etc / "passwd", f"root:x:0:0::/:/bin/false\n"
           f"nixjail:x:{JAIL_UID}:{JAIL_GID}::{JAIL_HOME}:/bin/bash\n"
           "nobody:x:65534:65534::/:/bin/false\n")
    _write(space.etc / "group", f"root:x:0:\nnixjail:x:{JAIL_GID}:\nnogroup:x:65534:\n")
    _write(space.etc / "hosts", "127.0.0.1 localhost\n::1 localhost\n")
    _write(space.etc / "nix" / "nix.conf", NIX_CONF)

    _write(space.tools / "pid1.sh", PID1_SH)
    _write(space.tools / "stage.sh", STAGE_SH)
    _write(space.tools / "dependencies.sh", DEPENDENCIES_SH)
    _write(space.tools / "compile.sh", job.compile_sh or "")
    _write(space.tools / "run.sh", job.run_sh)
    _write(space.stdin, job.stdin, 0o600)
    # Reopening /dev/stdin in the jail checks the file's permissions against the jail user.
    os.chown(space.stdin, uid, gid)
    environment = job.environment
    if environment.kind == "build":
        _write(space.tools / "shell.nix", environment.shell_nix)
        for directory in (space.nix, space.out):
            directory.mkdir(mode=0o755)
            os.chown(directory, uid, gid)
    elif environment.kind == "prebuilt" and not environment.env_script.startswith("/"):
        _write(space.tools / "env.sh", environment.env_script)
    for directory in (space.root, space.etc, space.tools):
        directory.chmod(0o755 if directory != space.root else 0o711)
    return space


def adopt_env_script(space: Workspace) -> str | None:
    """Move the dependencies stage's env.sh where later stages read it; say why not."""
    produced = space.out / "env.sh"
    if produced.is_symlink() or not produced.is_file() or produced.stat().st_size == 0:
        return "the dependencies stage produced no environment script"
    shutil.copyfile(produced, space.tools / "env.sh")
    (space.tools / "env.sh").chmod(0o644)
    return None
