"""Confine the evaluation child: no network, no privileges, a narrow filesystem.

``apply(policy)`` runs first thing in the child (``sandbox.child_main``),
before the target is imported, and stacks independent layers so that each
guarantee still holds where one layer is missing:

``netns``
    A new, empty network namespace (``unshare(CLONE_NEWNET)``; through a user
    namespace when the worker is not root). Only a loopback device that is
    down: nothing is reachable, not even 127.0.0.1.
``seccomp``
    A libseccomp filter: ``socket`` and ``socketpair`` of any family but
    ``AF_UNIX`` fail with ``EACCES``, and ``io_uring`` (which can open sockets
    without ``socket(2)``) is refused. Holds where namespaces are not allowed.
``uid``
    When the worker is root: a private mount namespace in which the
    interpreter and the inputs are reachable for the sandbox user even when
    an ancestor folder is not (``/root/...``, a worker's 0700 work folder),
    the scratch folder handed over to that user, then ``setgid``/``setuid``
    to ``CIVITAS_SANDBOX_UID`` (default 65534, *nobody*).
``landlock``
    A Landlock domain: read-only access to the interpreter, the ``engine``
    package, system libraries and the declared inputs (the bundle);
    read-write access to the scratch folder only; no TCP connect or bind
    (ABI 4+); no signals or abstract sockets outside the domain (ABI 6+).
    Works without root, so it is the filesystem layer that holds everywhere.

Each layer that cannot be applied (old kernel, no libseccomp, not Linux) is
skipped and named in the report, which ``sandbox`` returns with every
evaluation. Pure Python over ``ctypes``; see the notes at each binding for
why no PyPI package is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("netns", "seccomp", "uid", "landlock")
DEFAULT_SANDBOX_UID = 65534

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38

# What the interpreter needs read-only besides its own prefix and sys.path.
_SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/localtime",
    # The child's own /proc/<pid> (opened through /proc/self when the rule is
    # made) and the system-wide figures the runtimes size themselves by; not
    # /proc itself, where a same-uid worker's environ would be readable.
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


def policy(
    *, inputs: Iterable[str | os.PathLike] = (), layers: Iterable[str] | None = None
) -> dict:
    """The confinement the parent asks for (JSON-able; read in the parent).

    ``inputs`` are the files or folders the child may read (the bundle);
    ``layers`` defaults to all of ``LAYERS`` (tests pick one at a time).
    """
    chosen = list(LAYERS if layers is None else layers)
    unknown = set(chosen) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown sandbox layers: {sorted(unknown)}")
    uid = int(os.environ.get("CIVITAS_SANDBOX_UID") or DEFAULT_SANDBOX_UID)
    gid = int(os.environ.get("CIVITAS_SANDBOX_GID") or uid)
    return {
        "layers": chosen,
        "inputs": [str(Path(p).resolve()) for p in inputs],
        "uid": uid,
        "gid": gid,
        "parent": os.getpid(),
    }


def apply(spec: dict | None, scratch: Path) -> dict:
    """Confine the calling process (the child) as ``spec`` says; return the report.

    Irreversible. A layer that fails to apply is reported as
    ``"unavailable: <why>"``; an unexpected error propagates (the run fails
    rather than running unconfined).
    """
    report: dict = {}
    if not spec:
        return {"layers": "none requested"}
    layers = set(spec.get("layers") or ())
    if not sys.platform.startswith("linux"):
        return dict.fromkeys(layers, "unavailable: not Linux")
    libc = ctypes.CDLL(None, use_errno=True)
    scratch = Path(scratch).resolve()
    inputs = [Path(p) for p in spec.get("inputs") or ()]
    read_only = [*_interpreter_paths(), *inputs]
    is_root = os.geteuid() == 0
    ruleset = _landlock_ruleset(libc, read_only, scratch, report) if (
        "landlock" in layers
    ) else None
    if "netns" in layers:
        report["netns"] = _new_netns(libc, is_root)
    if "uid" in layers:
        report["uid"] = (
            _drop_to(libc, spec, scratch, [*read_only, scratch])
            if is_root
            else "not needed: worker is not root"
        )
    if _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if "seccomp" in layers:
        report["seccomp"] = _seccomp_deny_sockets()
    if ruleset is not None:
        report["landlock"] = _landlock_restrict(libc, ruleset)
    report["uid_now"] = os.getuid()
    return report


def _prctl(libc, option: int, value: int) -> int:
    zero = ctypes.c_ulong(0)
    return int(libc.prctl(option, ctypes.c_ulong(value), zero, zero, zero))


def _interpreter_paths() -> list[Path]:
    """Folders the interpreter reads from: prefixes, sys.path, system libraries."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), PROJECT_ROOT / "engine"}
    for entry in sys.path:
        if not entry:
            continue
        path = Path(entry).resolve()
        # PROJECT_ROOT (on PYTHONPATH) and its ancestors would open var/ and
        # the whole tree; only the engine package is granted below it.
        if path == PROJECT_ROOT or path in PROJECT_ROOT.parents:
            continue
        paths.add(path)
    paths.update(Path(p) for p in _SYSTEM_READ)
    return sorted(p for p in paths if p.exists())


# --- network namespace -----------------------------------------------------


def _new_netns(libc, is_root: bool) -> str:
    """Move into a new, empty network namespace; say how (or why not)."""
    if is_root and libc.unshare(_CLONE_NEWNET) == 0:
        return "applied: new network namespace"
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        return f"unavailable: unshare: {os.strerror(err)}"
    # Map the worker's own ids so files keep their owner inside; best effort
    # (the namespace isolates the network either way).
    with contextlib.suppress(OSError):
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    return "applied: new user and network namespace"


# --- unprivileged user -------------------------------------------------------


def _drop_to(libc, spec: dict, scratch: Path, needed: Sequence[Path]) -> str:
    """As root: make ``needed`` reachable for the sandbox user, then become it."""
    uid, gid = int(spec["uid"]), int(spec["gid"])
    if uid == 0:
        raise ValueError("CIVITAS_SANDBOX_UID must not be 0")
    for path in spec.get("inputs") or ():
        _check_readable(Path(path), uid, gid)
    try:
        _private_view(libc, needed, uid)
    except PermissionError as exc:
        # No CAP_SYS_ADMIN (a root container with Docker's default caps):
        # without the view the sandbox user could not load the interpreter.
        return f"unavailable: no private mount view ({exc.strerror})"
    os.chown(scratch, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    # Changing credentials clears the parent-death signal: arm it again, and
    # leave if the parent already died in between.
    _prctl(libc, _PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if spec.get("parent") and os.getppid() != spec["parent"]:
        os._exit(1)
    return f"applied: uid {uid}, gid {gid}"


def _check_readable(path: Path, uid: int, gid: int) -> None:
    """Refuse an input the sandbox user could not read even with its folders open."""
    info = os.stat(path)
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(info.st_mode) else 0)
    if info.st_uid == uid:
        need <<= 6
    elif info.st_gid == gid:
        need <<= 3
    if info.st_mode & need != need:
        raise PermissionError(
            f"input {path} is not readable for the sandbox user {uid} "
            f"(mode {stat.filemode(info.st_mode)}); make it readable by others "
            "or set CIVITAS_SANDBOX_UID to its owner"
        )


def _blocked_ancestor(path: Path, uid: int) -> Path | None:
    """The highest proper ancestor of ``path`` that ``uid`` cannot traverse."""
    for ancestor in reversed(path.parents):
        info = os.stat(ancestor)
        bit = stat.S_IXUSR if info.st_uid == uid else stat.S_IXOTH
        if not info.st_mode & bit:
            return ancestor
    return None


def _private_view(libc, needed: Sequence[Path], uid: int) -> None:
    """In a private mount namespace, make every ``needed`` path reachable for ``uid``.

    A folder the user cannot traverse (``/root`` holding the interpreter, a
    worker's 0700 work folder holding the bundle) is covered with an empty
    tmpfs into which only the needed paths are bind-mounted back: whatever
    else it held stays out of sight. Nothing changes outside the child.
    """
    covers: dict[Path, list[Path]] = {}
    # Only the outermost of nested paths is mounted; the rest come with it.
    unique = set(needed)
    outermost = [p for p in unique if not unique.intersection(p.parents)]
    for path in sorted(outermost):
        blocked = _blocked_ancestor(path, uid)
        if blocked is not None:
            covers.setdefault(blocked, []).append(path)
    if not covers:
        return
    if libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    for blocked, paths in sorted(covers.items(), key=lambda kv: len(kv[0].parts)):
        fds = {p: os.open(p, os.O_PATH) for p in paths}
        _mount(libc, "tmpfs", str(blocked), "tmpfs", _MS_NOSUID | _MS_NODEV,
               b"mode=0755,size=64k")
        for path, fd in fds.items():
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                path.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            _mount(libc, f"/proc/self/fd/{fd}", str(path), None, _MS_BIND | _MS_REC)
            os.close(fd)


def _bytes(value: str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    args = (_bytes(source), _bytes(target), _bytes(fstype))
    if libc.mount(*args, ctypes.c_ulong(flags), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


# --- seccomp -------------------------------------------------------------------
# libseccomp (Debian's libseccomp2, present wherever apt is) is the maintained
# implementation; it is called through ctypes because its official Python
# bindings are not published on PyPI for a virtualenv, and the ctypes wrapper
# that is (pyseccomp 0.1.2) has not been maintained since 2021.

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_AF_UNIX = 1


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _seccomp_deny_sockets() -> str:
    """Load a filter refusing non-AF_UNIX sockets and io_uring; say how (or why not)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        return f"unavailable: libseccomp.so.2: {exc}"
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    deny = 0x00050000 | errno.EACCES  # SCMP_ACT_ERRNO(EACCES)
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return "unavailable: seccomp_init failed"
    try:
        not_unix = (_ArgCmp * 1)(_ArgCmp(0, _SCMP_CMP_NE, _AF_UNIX, 0))
        for name, cmp in (("socket", not_unix), ("socketpair", not_unix),
                          ("io_uring_setup", None), ("io_uring_enter", None),
                          ("io_uring_register", None)):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue
            rc = lib.seccomp_rule_add_array(ctx, deny, number, 1 if cmp else 0, cmp)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({name})")
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            raise OSError(-rc, "seccomp_load")
    finally:
        lib.seccomp_release(ctx)
    return "applied: sockets other than AF_UNIX and io_uring refused"


# --- Landlock --------------------------------------------------------------------
# Raw syscalls through ctypes: the PyPI binding (``landlock`` 1.0.0.dev5) is a
# pre-release that knows neither the network rights (ABI 4) nor scoping
# (ABI 6), and three syscalls do not justify a dependency.

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_LL_READ_FILE, _LL_READ_DIR = 1 << 2, 1 << 3
_LL_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall(libc, number: int, *args) -> int:
    """``syscall(2)`` with every integer passed as a full ``long``."""
    wrapped = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(libc.syscall(ctypes.c_long(number), *wrapped))


def landlock_abi(libc=None) -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing."""
    libc = libc or ctypes.CDLL(None, use_errno=True)
    version = _syscall(libc, _SYS_CREATE_RULESET, None, 0, 1)
    return max(int(version), 0)


def _landlock_ruleset(libc, read_only, scratch: Path, report: dict) -> int | None:
    """Build (not yet enforce) the ruleset; ``None`` with a reason where impossible."""
    abi = landlock_abi(libc)
    if abi < 1:
        report["landlock"] = "unavailable: kernel without Landlock"
        return None
    handled = (1 << 13) - 1
    handled |= (1 << 13) if abi >= 2 else 0  # REFER
    handled |= (1 << 14) if abi >= 3 else 0  # TRUNCATE
    handled |= (1 << 15) if abi >= 5 else 0  # IOCTL_DEV
    attr = _RulesetAttr(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    fd = _syscall(libc, _SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if fd < 0:
        report["landlock"] = f"unavailable: {os.strerror(ctypes.get_errno())}"
        return None
    reading = _LL_READ_FILE | _LL_READ_DIR
    rules = [(p, reading) for p in read_only]
    rules += [(Path(d), _LL_FILE_RIGHTS) for d in _DEVICES]
    rules += [(PROJECT_ROOT, _LL_READ_DIR), (scratch, handled)]
    for path, rights in rules:
        _landlock_allow(libc, fd, path, rights & handled)
    report["landlock_abi"] = abi
    return fd


def _landlock_allow(libc, ruleset: int, path: Path, rights: int) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this system does not have
    try:
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            rights &= _LL_FILE_RIGHTS
        rule = _PathBeneath(rights, target)
        if _syscall(libc, _SYS_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
    finally:
        os.close(target)


def _landlock_restrict(libc, ruleset: int) -> str:
    try:
        if _syscall(libc, _SYS_RESTRICT_SELF, ruleset, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return "applied: filesystem limited to inputs, scratch and the interpreter"
