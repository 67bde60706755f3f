"""The directories init prepares for the jails: the work dir, /etc, the stage scripts, /nix."""

from __future__ import annotations

import os
import shutil
import stat
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
# Its arguments ($1, $2, ...) come NUL-separated from the script's .args file.
STAGE_SH = f"""\
__nixjail_script={JAIL_TOOLS}/$1.sh
__nixjail_args={JAIL_TOOLS}/$1.args
set --
if [ -n "${{NIXJAIL_ENV_SCRIPT:-}}" ]; then
  . "$NIXJAIL_ENV_SCRIPT"
fi
unset NIXJAIL_ENV_SCRIPT
export HOME={JAIL_HOME} TMPDIR=/tmp TMP=/tmp TEMP=/tmp TEMPDIR=/tmp
cd {JAIL_HOME} || exit 1
if [ -s "$__nixjail_args" ]; then
  mapfile -d '' -t __nixjail_argv < "$__nixjail_args"
  set -- "${{__nixjail_argv[@]}}"
  unset __nixjail_argv
fi
unset __nixjail_args
. "$__nixjail_script"
"""

# Build the environment once: print-dev-env builds the shell's inputs and writes the script
# later stages source.
DEPENDENCIES_SH = f"""\
export HOME=/tmp  # nix's caches stay out of the work dir
nix --extra-experimental-features nix-command print-dev-env -L \\
  -f {JAIL_TOOLS}/shell.nix > {JAIL_OUT}/env.sh
"""


# nixjail's /usr/bin/env for the compile and run jails, which have no coreutils of the
# image: enough for `#!/usr/bin/env NAME` lines and `env NAME=VALUE COMMAND`.
#   env [-i] [-u NAME] [-C DIR] [-S 'WORDS'] [--] [NAME=VALUE]... [COMMAND [ARG]...]
# -S splits its argument at blanks only (no quotes or escapes), then options are read
# again, as GNU env does. Without a command it prints the environment.
ENV_SH = r"""#!/bin/bash
set -f
while [ $# -gt 0 ]; do
  case $1 in
    -i|--ignore-environment|-)
      for __n in $(compgen -e); do unset -v "$__n" 2>/dev/null; done; shift ;;
    -u|--unset) unset -v "$2"; shift 2 ;;
    -u*) unset -v "${1#-u}"; shift ;;
    --unset=*) unset -v "${1#--unset=}"; shift ;;
    -C|--chdir) cd "$2" || exit 125; shift 2 ;;
    -S*|--split-string=*)
      __s=${1#-S}; __s=${__s#--split-string=}; shift
      if [ -z "$__s" ]; then __s=$1; shift; fi
      __w=($__s); set -- "${__w[@]}" "$@" ;;
    --) shift; break ;;
    -?*) echo "env: unsupported option $1" >&2; exit 125 ;;
    *) break ;;
  esac
done
while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do export "$1"; shift; done
if [ $# -eq 0 ]; then
  for __n in $(compgen -e); do printf '%s=%s\n' "$__n" "${!__n}"; done
  exit 0
fi
# As execvp: without PATH, look in /usr/bin and /bin (not exported to the command).
[ -n "${PATH+set}" ] || PATH=/usr/bin:/bin
exec "$@"
"""

# The static bash that compile and run jails get as /bin/bash and /bin/sh: the image's
# (images/runner/build, nix/runner-image.nix), else Debian's bash-static on a host checkout.
STATIC_BASH_PATHS = (Path("/opt/nixjail/static/bash"), Path("/bin/bash-static"))


def static_bash() -> Path:
    for path in STATIC_BASH_PATHS:
        if path.exists():
            return Path(os.path.realpath(path))
    raise OSError(f"no static bash at {STATIC_BASH_PATHS[0]} (the runner image provides it)")


def store_mounts() -> list[str]:
    """What of /nix/store a compile or run jail of kind "prebuilt" sees.

    The runner binds the environment's closure path by path over the image's
    /nix/store: those mount points, and nothing of the image (a Nix-built
    image's own store paths, the overlay below them). With none (standalone
    use) a /nix/store not on an overlay is bound whole.
    """
    points: list[str] = []
    overlay_store = False
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            fstype = fields[fields.index("-") + 1]
            parent, _, name = point.rpartition("/")
            if parent == "/nix/store" and name and point not in points:
                points.append(point)
            elif point in ("/", "/nix", "/nix/store"):
                overlay_store = fstype == "overlay"
    if points:
        return points
    return ["/nix/store"] if os.path.isdir("/nix/store") and not overlay_store else []


# A Nix-built runner image keeps its own tools (bash, nix) in /nix/store and
# lists them here; the private store of a build keeps them (see image_store).
IMAGE_STORE_PATHS = Path("/opt/nixjail/image-store-paths")
IMAGE_NIX_DB = Path("/nix/var/nix/db")


def image_store() -> list[str]:
    """The store paths the image's own tools need, when the image lists them.

    A submission that builds its environment gets an empty private store at
    /nix; these paths are mounted into it read-only, and its database starts
    as the image's (which registers them), so the tools still run and Nix
    counts their paths as valid instead of building them again.
    """
    try:
        lines = IMAGE_STORE_PATHS.read_text().split()
    except FileNotFoundError:
        return []
    return [line for line in lines
            if line.startswith("/nix/store/") and "/" not in line[len("/nix/store/"):]
            and os.path.lexists(line)]


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
    def bash(self) -> Path:
        """The static bash, copied: a bind from the image would name its overlay."""
        return self.root / "bin" / "bash"

    @property
    def env_command(self) -> Path:
        return self.root / "bin" / "env"

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
    write_private(space.stdin, job.stdin, uid, gid)
    environment = job.environment
    if environment.kind in ("build", "prebuilt"):
        # Once per container, in the state dir's tmpfs (~2 MiB, charged to the container
        # like every file there, and within the size the runner gives that tmpfs).
        (space.root / "bin").mkdir(mode=0o755)
        shutil.copyfile(static_bash(), space.bash)
        space.bash.chmod(0o755)
        _write(space.env_command, ENV_SH, 0o755)
    if environment.kind == "build":
        _write(space.tools / "shell.nix", environment.shell_nix)
        for directory in (space.nix, space.out):
            directory.mkdir(mode=0o755)
            os.chown(directory, uid, gid)
        _seed_private_store(space.nix, image_store(), uid, gid)
    elif environment.kind == "prebuilt" and not environment.env_script.startswith("/"):
        _write(space.tools / "env.sh", environment.env_script)
    for directory in (space.root, space.etc, space.tools):
        directory.chmod(0o755 if directory != space.root else 0o711)
    return space


def _seed_private_store(nix: Path, paths: list[str], uid: int, gid: int) -> None:
    """The image's own store paths in the private store: mount points for
    them, and the image's database, owned by the jail user who builds."""
    if not paths:
        return
    store = nix / "store"
    store.mkdir(mode=0o775)
    os.chown(store, uid, gid)
    for path in paths:
        point = store / os.path.basename(path)
        if os.path.isdir(path):
            point.mkdir()
        else:
            point.touch()
    if IMAGE_NIX_DB.is_dir():
        shutil.copytree(IMAGE_NIX_DB, nix / "var" / "nix" / "db", symlinks=True)
        _chown_tree(nix / "var", uid, gid)


def write_args(space: Workspace, script: str, args: list[str]) -> None:
    """The positional parameters the next run of `script` gets."""
    _write(space.tools / f"{script}.args", b"".join(arg.encode() + b"\0" for arg in args))


def write_private(path: Path, data: bytes | str, uid: int, gid: int) -> None:
    """A file of init's own that only the jail user may read: reopening it in
    the jail (as /dev/stdin) checks its permissions against the jail user."""
    _write(path, data, 0o600)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def write_under(root: Path, name: str, data: bytes, uid: int, gid: int) -> None:
    """Write `root/name` where a jail may have been: no component of the way may be a
    symlink (it could point anywhere init, as root, can write), nor the file a
    directory. Raises OSError naming the file otherwise."""
    parts = name.split("/")
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            directory.mkdir(mode=0o755)
            if os.geteuid() == 0:
                os.chown(directory, uid, gid)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(f"{name!r}: {part!r} is not a directory in the work dir")
    target = directory / parts[-1]
    if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
        raise OSError(f"{name!r} is not a regular file in the work dir")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if os.geteuid() == 0:
        os.chown(target, uid, gid)


def copy_tree(source: Path, target: Path, *, skip: str, uid: int, gid: int) -> None:
    """Copy what a jail left in `source` (not its entry `skip`) to `target`: directories,
    regular files and symlinks as links, never followed; FIFOs, sockets and the like
    are left out (opening a FIFO would wait for a writer that never comes)."""
    for directory, dirs, files in os.walk(source):
        here = Path(directory)
        into = target / here.relative_to(source)
        if here == source and skip in dirs:
            dirs.remove(skip)
        for name in dirs + files:
            path, copy = here / name, into / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(path), copy)
                if name in dirs:
                    dirs.remove(name)
            elif stat.S_ISDIR(info.st_mode):
                copy.mkdir(mode=stat.S_IMODE(info.st_mode) | 0o700)
            elif stat.S_ISREG(info.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as reader, open(copy, "xb") as writer:
                    shutil.copyfileobj(reader, writer)
                os.chmod(copy, stat.S_IMODE(info.st_mode))
            else:
                continue
            if os.geteuid() == 0:
                os.chown(copy, uid, gid, follow_symlinks=False)


def _jail_dir(space: Workspace, prefix: str, files: dict[str, bytes], uid: int, gid: int,
              *, copy_work_dir: bool) -> Path:
    """A new work dir for one jail beside the compiled one, holding `files`
    (over a copy of the compiled work dir when `copy_work_dir`), the jail user's."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=space.work_dir))
    try:
        if copy_work_dir:
            copy_tree(space.work_dir, directory, skip=directory.name, uid=uid, gid=gid)
        for name, content in files.items():
            write_under(directory, name, content, uid, gid)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    os.chmod(directory, 0o755)
    if os.geteuid() == 0:
        os.chown(directory, uid, gid)
    return directory


def fresh_case_dir(space: Workspace, files: dict[str, bytes], uid: int, gid: int) -> Path:
    """A copy of the compiled work dir, with the case's own files laid over it."""
    return _jail_dir(space, ".nixjail-case-", files, uid, gid, copy_work_dir=True)


def fresh_check_dir(space: Workspace, files: dict[str, bytes], uid: int, gid: int) -> Path:
    """The custom checker's work dir: only the files it is given."""
    return _jail_dir(space, ".nixjail-check-", files, uid, gid, copy_work_dir=False)


def adopt_env_script(space: Workspace) -> str | None:
    """Move the dependencies stage's env.sh where later stages read it; say why not."""
    produced = space.out / "env.sh"
    if produced.is_symlink() or not produced.is_file() or produced.stat().st_size == 0:
        return "the dependencies stage produced no environment script"
    shutil.copyfile(produced, space.tools / "env.sh")
    (space.tools / "env.sh").chmod(0o644)
    return None
