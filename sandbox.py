"""The sandbox that runs generated code: a fresh, isolated interpreter with resource limits, whose result says
whether the program's own tests really ran (see the mechanisms below). `SandboxRun` starts one such process
(several may run at once, sharing pipes: code_check.py's candidate and checker); `run_sandboxed` runs a program.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass


# ----------------------------------------------------------------------------------------------------------------
# Sandbox
#
# Generated code runs in a fresh `python -I -B` process, in its own session (so one killpg reaches its children),
# with rlimits on memory, CPU, file size, open files and processes, a minimal environment, stdin from /dev/null
# and stdout+stderr in a file capped by RLIMIT_FSIZE (the parent reads only its tail). Three mechanisms, the
# strongest that works is used (see `sandbox_mechanism()`, override with LATENTMAS_SANDBOX):
#   "namespaces": (root) new mount, network and IPC namespaces; /tmp, /var/tmp and /dev/shm replaced by private
#                 tmpfs; directories the interpreter needs behind a closed parent (e.g. /root, mode 700) are
#                 re-exposed read-only on a tmpfs that hides everything else there; then a dedicated uid.
#   "uid":        (root) only the dedicated uid.
#   "rlimits":    rlimits and the process group only (non-root users: no protection of the caller's files);
#                 os.fork/kill/system/exec* and subprocess.Popen are replaced by stubs that raise, a best-effort
#                 guard against accidental fork bombs and kills, not a boundary.
# The dedicated uid is fresh per run, claimed on the whole machine (a lock file per uid under UID_CLAIMS, so two
# evaluations on one machine never share one) and owns no file, so the code cannot change the host's files nor
# signal the caller (kill(getppid()) fails, kill(-1) reaches only its own processes), and RLIMIT_NPROC, which root
# ignores, bounds fork bombs. Memory is capped by RLIMIT_AS (4 GiB: Mbpp/255's own tests peak at 2.2 GB).
# After the run every process with that uid is killed, which also catches children that left the session; no
# other sandbox's processes are touched.
#
# A pass needs exit code 0 AND a per-run random token that the runner prints after the tests: sys.exit(0),
# os._exit(0) or a self-kill before the tests therefore fail. The token travels on stdin, which the runner
# reads before the candidate starts. This stops accidents, not an adversary that inspects the runner's frames.

SANDBOX_UID_BASE = 3_000_000  # dedicated uids are drawn from [BASE, BASE + COUNT); no account uses them
SANDBOX_UID_COUNT = 1_000_000
MECHANISMS = ("namespaces", "uid", "rlimits")

# Every sandboxed process starts with this prelude: its settings (one JSON line) and its payload (the rest) from
# stdin, then isolation, the dedicated uid and the limits. The body that follows runs the payload.
_PRELUDE = r'''
import ctypes, json, os, resource, stat, sys
cfg = json.loads(sys.stdin.buffer.readline())
src = sys.stdin.buffer.read().decode("utf-8", "replace")
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)

def isolate(uid):
    libc = ctypes.CDLL(None, use_errno=True)
    def check(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
    def mount(src, target, fstype, flags, data=None):
        enc = lambda s: s.encode() if s is not None else None
        check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
    check(libc.unshare(0x00020000 | 0x40000000 | 0x08000000), "unshare")  # CLONE_NEWNS | NEWNET | NEWIPC
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # What the interpreter needs to read, minimal set (drop paths inside another needed path).
    need = {os.path.realpath(p) for p in sys.path + [sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                    os.path.dirname(os.path.realpath(sys.executable))]}
    need = sorted(p for p in need if os.path.isdir(p))
    need = [p for p in need if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in need)]
    def closed(d):
        return not os.stat(d).st_mode & stat.S_IXOTH
    covers = {}
    for p in need:  # the topmost closed strict ancestor of a needed path gets a tmpfs with the path re-bound
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            a = "/" + "/".join(parts[:i])
            if closed(a):
                covers.setdefault(a, "mode=755,size=1m")
                break
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(d) and not os.path.islink(d):
            covers[d] = "mode=1777,size=64m"
    for target, opts in sorted(covers.items()):
        inside = [p for p in need if p.startswith(target.rstrip("/") + "/")]
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inside]
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        for p, fd in zip(inside, fds):
            os.makedirs(p, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)

if cfg["isolate"]:
    isolate(cfg["uid"])
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
if cfg["guard"]:  # no dedicated uid contains the program: refuse the calls that reach other processes
    def refused(*args, **kwargs):
        raise PermissionError("blocked by the sandbox (no dedicated uid available)")
    import subprocess
    for name in ("fork", "forkpty", "kill", "killpg", "system", "popen", "posix_spawn", "posix_spawnp",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "execv", "execve", "execvp", "execvpe"):
        if hasattr(os, name):
            setattr(os, name, refused)
    subprocess.Popen = refused
os.chdir(cfg["cwd"])
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
'''

# The body of a plain program run: the program, then the token.
_PROGRAM = r'''
token = cfg.pop("token").encode()
del cfg
# The reference exec()'d the program in a fresh dict, so `if __name__ == "__main__":` demo blocks never ran.
namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
exec(compile(src, "solution.py", "exec", dont_inherit=True), namespace)
sys.stdout.flush()
sys.stderr.flush()
os.write(1, b"\n" + token + b"\n")
'''


@dataclass
class SandboxResult:
    ok: bool  # the program ran to its end: exit code 0 and the token printed
    returncode: int | None  # None on timeout; negative: killed by that signal
    timed_out: bool
    output: str  # the tail of stdout + stderr
    elapsed: float
    mechanism: str
    uid: int | None = None  # the dedicated uid it ran as (None: rlimits only); its processes are gone

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        if self.timed_out:
            return f"TimeoutError: execution exceeded the time limit ({self.elapsed:.1f} s)"
        tail = self.output.strip()[-2000:]
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            why = {"SIGXFSZ": "output or file size limit exceeded", "SIGXCPU": "CPU time limit exceeded"}
            return f"killed by {name}" + (f" ({why[name]})" if name in why else "") + (f"\n{tail}" if tail else "")
        if self.returncode == 0:
            return "the program exited before its tests finished (sys.exit / os._exit?)" + (f"\n{tail}" if tail else "")
        return tail or f"exit code {self.returncode}"


_uid_lock = threading.Lock()
_uids_in_use: dict[int, int] = {}  # uid -> the descriptor of its claim file, held while the uid is in use
# A uid is claimed on the whole machine by an exclusive lock on a file here (root only, mode 700), so two
# evaluations on one machine never draw the same uid (whose sweep would kill the other's program).
UID_CLAIMS = "/run/latentmas-sandbox-uids"


def _claim(uid: int) -> int | None:
    """A lock on uid's claim file, or None when another process holds it."""
    os.makedirs(UID_CLAIMS, mode=0o700, exist_ok=True)
    path = os.path.join(UID_CLAIMS, str(uid))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its last holder unlinked meanwhile
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _alloc_uid() -> int:
    with _uid_lock:
        while True:
            uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)
            if uid not in _uids_in_use and (fd := _claim(uid)) is not None:
                _uids_in_use[uid] = fd
                return uid


def _free_uid(uid: int) -> None:
    with _uid_lock:
        fd = _uids_in_use.pop(uid)
    os.unlink(os.path.join(UID_CLAIMS, str(uid)))  # while locked: a process that opened it meanwhile sees it gone
    os.close(fd)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(name))
    return pids


def _kill_uid(uid: int, deadline: float) -> None:
    """SIGKILL every process of a sandbox uid until none is left (a fork bomb keeps forking for a moment)."""
    while time.monotonic() < deadline:
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _limits(timeout: float, memory_mb: int, mechanism: str) -> dict[str, int]:
    limits = {
        "RLIMIT_AS": memory_mb * 2**20,
        "RLIMIT_CPU": int(timeout) + 1,
        "RLIMIT_FSIZE": 32 * 2**20,  # also caps the output file: printing 1 GB ends in SIGXFSZ
        "RLIMIT_NOFILE": 256,
        "RLIMIT_CORE": 0,
    }
    if mechanism != "rlimits":  # per uid: only meaningful for the dedicated uid (root ignores it)
        limits["RLIMIT_NPROC"] = 64
    return limits


def _read_tail(f, n: int = 16384) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - n))
    return f.read(n).decode("utf-8", "replace")


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for exit WITHOUT reaping (so the process group id stays ours for killpg); False on timeout."""
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


class SandboxRun:
    """One process started in the sandbox: `body` (Python source run after the prelude) reads `payload` as `src`
    and its settings as `cfg` (extra settings in `settings`); `pass_fds` are file descriptors it keeps (pipes).
    wait() ends it (at the latest at `timeout` seconds after the start), kills whatever it left, and returns its
    SandboxResult. Several may run at once (each has its own uid)."""

    def __init__(self, body: str, payload: str, timeout: float = 10, memory_mb: int = 4096,
                 mechanism: str | None = None, settings: dict | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        self.mechanism = mechanism or sandbox_mechanism()
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"unknown sandbox mechanism {self.mechanism!r}; choose one of {MECHANISMS}")
        self.timeout, self.token = timeout, secrets.token_hex(16)
        self.workdir = tempfile.mkdtemp(prefix="latentmas-sandbox-")
        self.uid = _alloc_uid() if self.mechanism != "rlimits" else None
        try:
            cwd = "/tmp" if self.mechanism == "namespaces" else self.workdir  # "/tmp" is the private tmpfs there
            if self.mechanism == "uid":
                os.chown(self.workdir, self.uid, self.uid)
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "HOME": cwd,
                "TMPDIR": cwd,
                "MPLBACKEND": "Agg",
                **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                    "NUMEXPR_NUM_THREADS")},
            }
            cfg = {
                "isolate": self.mechanism == "namespaces",
                "uid": self.uid,
                "guard": self.mechanism == "rlimits",
                "cwd": cwd,
                "limits": _limits(timeout, memory_mb, self.mechanism),
                "token": self.token,
                **(settings or {}),
            }
            self.out = open(os.path.join(self.workdir, "output.txt"), "w+b")
            self.start = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _PRELUDE + body],
                stdin=subprocess.PIPE,
                stdout=self.out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
            )
        except BaseException:
            self._clean()
            raise
        try:
            self.proc.stdin.write(json.dumps(cfg).encode() + b"\n" + payload.encode("utf-8", "replace"))
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the runner died early; its output says why

    def wait(self, expect_token: bool = False) -> SandboxResult:
        """Wait for the end (or the time limit), kill what is left, clean up. ok: exit code 0 and, with
        expect_token, the run's token printed (the program body prints it after the program)."""
        try:
            try:
                finished = _wait(self.proc, self.start + self.timeout)
            finally:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the group is still ours: the leader is not reaped yet
                except (ProcessLookupError, PermissionError):
                    pass
                if self.uid is not None:
                    _kill_uid(self.uid, time.monotonic() + 2.0)
                returncode = self.proc.wait()
            elapsed = time.monotonic() - self.start
            output = _read_tail(self.out)  # through our handle: the program may have unlinked or replaced the file
        finally:
            self._clean()
        ok = finished and returncode == 0 and (not expect_token or self.token in output)
        return SandboxResult(
            ok=ok,
            returncode=returncode if finished else None,
            timed_out=not finished,
            output=output.replace(self.token, ""),
            elapsed=elapsed,
            mechanism=self.mechanism,
            uid=self.uid,
        )

    def _clean(self) -> None:
        if getattr(self, "out", None) is not None:
            self.out.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.uid is not None:
            _free_uid(self.uid)


def run_sandboxed(code: str, timeout: float = 10, memory_mb: int = 4096, mechanism: str | None = None) -> SandboxResult:
    """Run `code` as a program in the sandbox; see the comment above for what is enforced."""
    return SandboxRun(_PROGRAM, code, timeout, memory_mb, mechanism).wait(expect_token=True)


def run_with_timeout(code: str, timeout: float = 10) -> tuple[bool, str | None]:
    """Reference-compatible: (True, None) if `code` ran to its end within `timeout` s, else (False, error)."""
    result = run_sandboxed(code, timeout=timeout)
    return result.ok, result.error


# The runner compiles the program as "solution.py": its frames locate the failing line in candidate + tests.
_SOLUTION_FRAME = re.compile(r'File "solution\.py", line (\d+)')
FAILURE_CHARS = 300  # a reason is one line for predictions.jsonl and the trace, not the whole traceback


def failure_reason(result: SandboxResult, program: str, candidate_lines: int) -> str | None:
    """Why a sandboxed candidate + tests program failed, in one line: the exception and the line it was raised
    at (of the candidate or of the tests, with its source, e.g. "AssertionError at line 3 of the tests: assert
    f(2) == 4"), a timeout, a signal, or an early exit. None when it passed."""
    if result.ok:
        return None
    output = result.output
    start = output.rfind("Traceback (most recent call last):")
    if result.timed_out or start < 0:
        reason = " ".join((result.error or "").split())
        return reason[:FAILURE_CHARS] or f"exit code {result.returncode}"
    after = output[start:].splitlines()[1:]
    # Frames and source lines are indented; the first line that is not is "ExceptionType: message".
    exception = next((line.strip() for line in after if line and not line[0].isspace()), "unknown exception")
    frames = _SOLUTION_FRAME.findall(output[start:])
    where = ""
    if frames:
        number = int(frames[-1])  # the innermost frame in the program: where it was raised
        lines = program.splitlines()
        source = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        part, line = ("candidate", number) if number <= candidate_lines else ("tests", number - candidate_lines)
        where = f" at line {line} of the {part}" + (f": {source}" if source else "")
    return " ".join(f"{exception}{where}".split())[:FAILURE_CHARS]


_mechanism: str | None = None
_mechanism_lock = threading.Lock()


def sandbox_mechanism() -> str:
    """The strongest sandbox mechanism that works here ("namespaces", "uid" or "rlimits"), probed once.

    LATENTMAS_SANDBOX=<name> forces one (e.g. to test the fallbacks).
    """
    global _mechanism
    forced = os.environ.get("LATENTMAS_SANDBOX")
    if forced:
        if forced not in MECHANISMS:
            raise ValueError(f"LATENTMAS_SANDBOX={forced!r}; choose one of {MECHANISMS}")
        return forced
    with _mechanism_lock:
        if _mechanism is None:
            _mechanism = "rlimits"
            if os.geteuid() == 0:
                # the dedicated uid must be able to read every import directory (not so under /root, mode 700)
                probe = (
                    "import os, sys\nassert os.getuid() != 0\nfor p in sys.path:\n"
                    "    try:\n        os.listdir(p)\n    except FileNotFoundError:\n        pass\n"
                )
                for candidate in ("namespaces", "uid"):
                    if run_sandboxed(probe, timeout=20, mechanism=candidate).ok:
                        _mechanism = candidate
                        break
            if _mechanism == "rlimits":
                logging.getLogger(__name__).warning(
                    "sandbox: only rlimits and a process group are available (not root); generated code "
                    "runs as the current user"
                )
        return _mechanism
