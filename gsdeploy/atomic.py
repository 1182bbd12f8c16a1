"""The one place gsdeploy writes files: checked targets, temp files beside them, atomic
publishing (several files as one pair), the umask, and scratch directories that a killed
run does not leave behind for long.

A reader (or an interrupted run) sees the old file or the new one, never half of one; only
regular files are ever replaced, never an input of the same command; a file that is
replaced keeps its mode, a new one gets the umask's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from gsdeploy.errors import OutputPathError

PathLike = str | os.PathLike
# Leftovers of a dead process are only swept once they are this old: a process in another pid
# namespace sharing the directory looks dead to os.kill but may still be writing.
STALE_AFTER_S = 600.0
SCRATCH_PREFIX = "gsdeploy-"

_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file (through symlinks, hard links or other spellings)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def files_in(paths: Iterable[PathLike]) -> list[Path]:
    """Every file a command may read from `paths`: the files named and all files below the
    directories named (what its outputs must not replace)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file())
        elif p.exists():
            out.append(p)
    return out


def check_target(path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Refuse a target that gsdeploy must not replace: a directory, device, FIFO or socket
    (also behind a symlink), a file that is one of `inputs`, or one in a missing or read-only
    directory. Returns the path."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"cannot write {path}: it is a directory; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"refusing to write {path}: it is a {_kind(st.st_mode)}, not a regular file "
                              "(gsdeploy only ever replaces regular files)")
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: directory {parent} is not writable")
    if st is not None:
        for inp in inputs:
            if same_file(path, inp):
                raise OutputPathError(f"refusing to write {path}: it is the same file as the input {inp}")
    return path


def check_targets(paths: Sequence[PathLike], inputs: Iterable[PathLike] = ()) -> list[Path]:
    """check_target for each, and no two targets naming the same file."""
    inputs = list(inputs)
    out = [check_target(p, inputs) for p in paths]
    for i, a in enumerate(out):
        for b in out[:i]:
            if os.path.abspath(a) == os.path.abspath(b) or same_file(a, b):
                raise OutputPathError(f"{b} and {a} are the same file; give two different outputs")
    return out


def check_out_dir(out_dir: Path) -> None:
    """Fail before any timing if the tables cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create output directory {out_dir}: {e.strerror or e}") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise OutputPathError(f"output directory {out_dir} is not a writable directory")


def umask() -> int:
    """The process umask, read without changing it where /proc allows (no window in which
    another thread creates files with umask 0)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or not a pid at all): not ours to judge
    return True


def _stale(path: Path, pid: int) -> bool:
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S and not _pid_alive(pid)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


def temp_prefix(target: Path) -> str:
    """Temp files of `target` are named .<name>.tmp-<pid>-..., so a later run can tell a dead
    process's leftovers (sweep_beside) from a live one's."""
    return f".{target.name}.tmp-"


def _sweep(root: Path, pattern: re.Pattern) -> list[Path]:
    """Remove entries of `root` whose name matches `pattern` (group 1: the pid that made them)
    when that process is gone and they are old enough."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if m and _stale(p, int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


def sweep_beside(target: PathLike) -> list[Path]:
    """Remove temp files that a dead gsdeploy process left beside `target` (after SIGKILL or a
    power cut: SIGINT and SIGTERM clean up themselves). Returns what was removed."""
    target = Path(target)
    return _sweep(target.parent, re.compile(re.escape(temp_prefix(target)) + r"(\d+)(?:-|$)"))


def sweep_scratch(root: PathLike | None = None) -> list[Path]:
    """Remove gsdeploy-<kind>-<pid>-* scratch directories of dead processes from the temp dir."""
    return _sweep(Path(root or tempfile.gettempdir()), re.compile(re.escape(SCRATCH_PREFIX) + r"[a-z0-9]+-(\d+)-"))


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private temp directory (gsdeploy-<kind>-<pid>-XXXX), removed on exit, SIGINT or SIGTERM
    (see cli.main); leftovers of killed runs are swept first."""
    sweep_scratch()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-") as tmp:
        yield Path(tmp)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Staged:
    """Files written to temp names beside their targets and published together, or not at all.

        with Staged([out, manifest], inputs=[model_file]) as st:
            export(st.temp(out)); st.write_bytes(manifest, data)
            st.commit()

    The targets are checked when staging starts and again just before publishing; leaving the
    block without commit() removes every temp file. commit() renames one file at a time and,
    if a later rename fails, puts the earlier targets back as they were.
    """

    def __init__(self, targets: Sequence[PathLike], inputs: Iterable[PathLike] = ()) -> None:
        self.inputs = [Path(p) for p in inputs]
        self.targets = check_targets(targets, self.inputs)
        self._temps: dict[Path, Path] = {}
        for t in self.targets:
            sweep_beside(t)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def temp(self, target: PathLike, keep_suffix: bool = False) -> Path:
        """An empty temp file (created exclusively, so no one can plant a link there) that will
        become `target`; keep_suffix for writers that choose the format by extension."""
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} is not one of the staged targets {self.targets}")
        if target not in self._temps:
            suffix = "".join(target.suffixes[-1:]) if keep_suffix else ""
            try:
                fd, tmp = tempfile.mkstemp(prefix=f"{temp_prefix(target)}{os.getpid()}-", suffix=suffix,
                                           dir=target.parent)
            except OSError as e:
                raise OutputPathError(f"cannot write to {target.parent}: {e.strerror or e}") from None
            os.close(fd)
            self._temps[target] = Path(tmp)
        return self._temps[target]

    def write_bytes(self, target: PathLike, data: bytes) -> Path:
        tmp = self.temp(target)
        try:
            tmp.write_bytes(data)
        except OSError as e:
            raise OutputPathError(f"cannot write {target}: {e.strerror or e}") from None
        return tmp

    def write_text(self, target: PathLike, text: str) -> Path:
        return self.write_bytes(target, text.encode("utf-8"))

    def _mode_for(self, target: Path, tmp: Path) -> None:
        """A replaced file keeps its mode (and, when we are root, its owner); a new one gets
        0666 minus the umask, like any file the user's shell would create."""
        try:
            st = os.stat(target)
        except FileNotFoundError:
            os.chmod(tmp, 0o666 & ~umask())
            return
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                os.chown(tmp, st.st_uid, st.st_gid)

    def commit(self) -> list[Path]:
        missing = [t for t in self.targets if t not in self._temps]
        if missing:
            raise ValueError(f"nothing staged for {missing}")
        check_targets(self.targets, self.inputs)  # again: the tree may have changed while we worked
        try:
            for target, tmp in self._temps.items():
                self._mode_for(target, tmp)
                _fsync(tmp)
        except OSError as e:
            raise OutputPathError(f"cannot write {target}: {e.strerror or e}") from None
        backups: dict[Path, Path | None] = {}
        if len(self._temps) > 1:
            backups = {t: self._backup(t) for t in self.targets if t.exists()}
        published: list[Path] = []
        try:
            for target, tmp in self._temps.items():
                os.replace(tmp, target)
                published.append(target)
        except BaseException as e:
            for target in reversed(published):
                with contextlib.suppress(OSError):
                    if backups.get(target) is not None:
                        os.replace(backups.pop(target), target)
                    else:
                        target.unlink()
            if isinstance(e, OSError):
                raise OutputPathError(f"cannot write {e.filename2 or e.filename or ''}: {e.strerror or e}; "
                                      "nothing was published") from None
            raise
        finally:
            for b in backups.values():
                if b is not None:
                    _remove(b)
        self._temps.clear()
        for parent in {t.parent for t in published}:
            _fsync_dir(parent)
        return published

    @staticmethod
    def _backup(target: Path) -> Path | None:
        """A second name for the current target (a hard link: no copy, no window without it),
        so a failed pair can be put back."""
        b = target.with_name(f"{temp_prefix(target)}{os.getpid()}-bak")
        with contextlib.suppress(FileNotFoundError):
            b.unlink()
        try:
            os.link(target, b)
        except OSError:
            try:
                shutil.copy2(target, b)
            except OSError:
                return None
        return b

    def discard(self) -> None:
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._temps.clear()


# How `locked` opens its lock file: never through a link, never blocking (a FIFO opened read-only
# would wait for a writer forever).
_LOCK_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def lock_problem(path: PathLike) -> str | None:
    """Why `locked` cannot use `path` as its lock file (one phrase, for a warning), or None when
    it can (also when it does not exist yet: it is made then)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror or str(e)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link (a lock file is never followed through a link)"
    if not stat.S_ISREG(st.st_mode):
        return f"it is a {_kind(st.st_mode)}, not a regular file"
    try:
        os.close(os.open(path, _LOCK_FLAGS))
    except OSError as e:
        return e.strerror or str(e)
    return None


# How long `locked` waits for another process: a lock is held only while a file is read and
# rewritten (milliseconds), so a holder this slow is hung, and waiting longer helps no one.
LOCK_WAIT_S = 10.0


@contextlib.contextmanager
def locked(path: PathLike, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """An exclusive flock on the lock file `path` around a read-modify-write of a file that
    several processes update (the timing cache), so none loses what another wrote meanwhile.
    The lock file is created if missing (never through a link) and never removed: removing it
    would let a second process lock a new file while the first still holds the old one. Best
    effort: without flock (Windows, some network file systems) or after `wait_s` the block runs
    unlocked; its write is still atomic."""
    try:
        import fcntl  # optional: POSIX only
    except ImportError:
        yield
        return
    try:
        fd = os.open(path, _LOCK_FLAGS | os.O_CREAT, 0o666 & ~umask())
    except OSError as e:
        raise OutputPathError(f"cannot use lock file {path}: {lock_problem(path) or e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # a FIFO or a device node planted under the lock's name
            raise OutputPathError(f"cannot use lock file {path}: it is a {_kind(mode)}, not a regular file")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            except OSError:  # no locks on this file system
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def write_bytes_atomic(path: PathLike, data: bytes, inputs: Iterable[PathLike] = ()) -> Path:
    """Write `data` to `path` through a temp file beside it: readers see the old file or the
    new one. Refuses what check_target refuses."""
    path = Path(path)
    with Staged([path], inputs) as st:
        st.write_bytes(path, data)
        st.commit()
    return path


def write_text_atomic(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), inputs)
