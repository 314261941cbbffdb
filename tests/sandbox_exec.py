"""Run a Python module under the kernel restrictions that kiosk.service asks systemd for.

    python tests/sandbox_exec.py [--mdwe prctl|seccomp] [--syscalls FILE] -- -m MODULE ARGS...
    python tests/sandbox_exec.py [...] -- -c CODE

Where systemd is not PID 1 (containers, CI) the unit itself cannot run, so this applies the
same kernel mechanisms to this process and then runs the module in it:

- ``--mdwe seccomp``: MemoryDenyWriteExecute= as systemd <= 255 implements it (seccomp, EPERM
  for mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, shmat SHM_EXEC).
- ``--mdwe prctl``: the kernel's own PR_SET_MDWE (Linux >= 6.3), which newer systemd uses.
- ``--syscalls FILE``: an allow-list (one syscall name a line, as resolved from
  SystemCallFilter= by ``systemd-analyze syscall-filter``); any other syscall fails with EPERM,
  as SystemCallErrorNumber=EPERM makes it in the unit (e.g. OpenBLAS's mbind() NUMA hint, which
  it tolerates). Callers compare results with an unrestricted run to catch silent failures.

Before running the module it proves that the restrictions are in force (a W+X mapping must be
refused); exit code 3 means they could not be applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import runpy
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000


def SCMP_ACT_ERRNO(err: int) -> int:  # noqa: N802 (libseccomp's macro name)
    return 0x00050000 | (err & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _fail(why: str) -> None:
    print(f"sandbox_exec: {why}", file=sys.stderr)
    sys.exit(3)


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)
    lib.seccomp_release(ctx)
    if rc != 0:
        _fail(f"seccomp_load failed: {errno.errorcode.get(-rc, rc)}")


def mdwe_seccomp() -> None:
    lib = _libseccomp()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    wx = mmap.PROT_WRITE | mmap.PROT_EXEC
    rules = [
        ("mmap", 2, wx, wx),
        ("mmap2", 2, wx, wx),
        ("mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
        ("pkey_mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
        ("shmat", 2, SHM_EXEC, SHM_EXEC),
    ]
    for name, arg, mask, value in rules:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not on this architecture (mmap2 is 32-bit only)
        cmp = ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno.EPERM), nr, 1, ctypes.byref(cmp)):
            _fail(f"cannot add the {name} rule")
    _load(lib, ctx)


def mdwe_prctl() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        _fail(f"PR_SET_MDWE unsupported: {errno.errorcode.get(ctypes.get_errno())}")


def syscall_allowlist(path: str) -> None:
    lib = _libseccomp()
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO(errno.EPERM))
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # a name for another architecture
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None):
            _fail(f"cannot allow {name}")
    _load(lib, ctx)


def assert_wx_refused() -> None:
    try:
        mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        return
    _fail("a writable+executable mapping was allowed: MemoryDenyWriteExecute is not in force")


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        _fail("usage: sandbox_exec.py [--mdwe prctl|seccomp] [--syscalls FILE] -- -m MOD ...")
    split = argv.index("--")
    opts, rest = argv[:split], argv[split + 1 :]
    mdwe = opts[opts.index("--mdwe") + 1] if "--mdwe" in opts else ""
    syscalls = opts[opts.index("--syscalls") + 1] if "--syscalls" in opts else ""
    if mdwe == "seccomp":
        mdwe_seccomp()
    elif mdwe == "prctl":
        mdwe_prctl()
    if mdwe:
        assert_wx_refused()
    if syscalls:
        syscall_allowlist(syscalls)
    print(f"sandbox_exec: mdwe={mdwe or 'off'} syscalls={syscalls or 'all'}", file=sys.stderr)
    if rest[:1] == ["-m"] and len(rest) >= 2:
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    elif rest[:1] == ["-c"] and len(rest) >= 2:
        sys.argv = ["-c", *rest[2:]]
        exec(compile(rest[1], "<sandbox>", "exec"), {"__name__": "__main__"})
    else:
        _fail(f"expected -m MODULE or -c CODE after --, got {rest}")


if __name__ == "__main__":
    main()
