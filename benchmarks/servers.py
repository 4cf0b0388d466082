"""The benchmark servers: the Go echo server (Websocket and plain TCP), nginx and
hypercorn (``asgi_server.py``, for HTTP/2).

Every server is a child of the harness, started in its own process group, bound
to 127.0.0.1, and stopped by its own handle (this machine's PID 1 does not reap
orphans).  ``Server.cpu_seconds()`` reads the CPU time of the server's processes
from ``/proc`` so the harness can print the server's CPU share of every run: a
server near 100 % of a core is the bottleneck and the run says so.

The Go echo server (``bench_echo/main.go``, copied from ``shared/peers/bench-echo``)
is built with Debian's ``golang-go`` and ``golang-github-gorilla-websocket-dev``
(GOPATH mode, no module download); ``ensure_go_toolchain`` installs them with apt
when they are missing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BUILD_DIR = HERE / ".build"
GO_SRC = HERE / "bench_echo" / "main.go"
GO_BIN = BUILD_DIR / "echo_go"
NGINX_TEMPLATE = HERE / "nginx.conf.in"

SMALL_BODY = b"gunpy benchmark: a static file of exactly one hundred bytes".ljust(99, b".") + b"\n"
BIG_SIZE = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Enough descriptors for 10,000 connections (a gunpy connection holds a socket and an
# eventfd); root may raise the hard limit too.
NOFILE_WANTED = 65536


class ServerError(RuntimeError):
    pass


def raise_nofile(wanted: int = NOFILE_WANTED) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) towards *wanted*; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), 0.2).close()
    except OSError:
        return False
    return True


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, all cores (``/proc/stat``).

    busy = user + nice + system + irq + softirq; steal = time the hypervisor gave
    this VM's vCPUs to someone else.  Over a run, busy minus the client's and the
    server's CPU is what *other* processes took: a loaded machine shows up there.
    """
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            out.append(int(entry))
    return out


class Server:
    """One server process (and, for nginx, its workers)."""

    def __init__(
        self, name: str, argv: Sequence[str], port: int, log_path: Path,
        env: dict[str, str] | None = None, cwd: Path | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.port = port
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=full_env, cwd=cwd, start_new_session=True,
                preexec_fn=raise_nofile,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not port_accepts(port):
            if self.proc.poll() is not None:
                raise ServerError(f"{name} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{name} did not accept connections on {port}:\n{self.log_tail()}")
            time.sleep(0.02)
        self._pids = [self.proc.pid]
        self.refresh_pids()

    def refresh_pids(self) -> None:
        """Re-read the server's processes (nginx forks its worker after it listens)."""
        self._pids = [self.proc.pid, *children_of(self.proc.pid)]

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (nginx: master and workers)."""
        return sum(proc_cpu_seconds(p) for p in self._pids)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- Go echo


def _have_go_deps() -> bool:
    return shutil.which("go") is not None and Path(
        "/usr/share/gocode/src/github.com/gorilla/websocket"
    ).is_dir()


def ensure_go_toolchain(log: Callable[[str], None] = print) -> None:
    """Install golang-go and golang-github-gorilla-websocket-dev with apt if missing."""
    if _have_go_deps():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerError(
            "the Go echo server needs Debian's golang-go and golang-github-gorilla-websocket-dev:"
            " apt-get install -y golang-go golang-github-gorilla-websocket-dev"
        )
    log("servers: installing golang-go golang-github-gorilla-websocket-dev (apt)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    pkgs = ["golang-go", "golang-github-gorilla-websocket-dev"]
    r = subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, capture_output=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, capture_output=True)
    if r.returncode != 0 or not _have_go_deps():
        raise ServerError(f"apt-get install {' '.join(pkgs)} failed:\n{r.stderr.decode()[-2000:]}")


def build_echo(log: Callable[[str], None] = print) -> Path:
    """Build ``bench_echo/main.go`` into ``.build/echo_go`` (again only when it changed)."""
    if GO_BIN.exists() and GO_BIN.stat().st_mtime >= GO_SRC.stat().st_mtime:
        return GO_BIN
    ensure_go_toolchain(log)
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off", GOFLAGS="",
        GOCACHE=str(BUILD_DIR / "gocache"), CGO_ENABLED="0",
    )  # fmt: skip
    log("servers: go build bench_echo/main.go")
    r = subprocess.run(
        ["go", "build", "-o", str(GO_BIN), str(GO_SRC)], env=env, capture_output=True, cwd=HERE
    )
    if r.returncode != 0:
        raise ServerError(f"go build failed:\n{r.stderr.decode()}")
    return GO_BIN


def go_version() -> str:
    try:
        return subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def start_echo(mode: str, workdir: Path, gomaxprocs: int = 1) -> Server:
    """The Go echo server: ``fast`` (corked hand-rolled Websocket), ``gorilla``, or ``tcp``."""
    exe = build_echo()
    port = free_port()
    return Server(
        f"echo-go-{mode}", [str(exe), mode, f"{HOST}:{port}"], port,
        workdir / f"echo-{mode}.log", env={"GOMAXPROCS": str(gomaxprocs)},
    )  # fmt: skip


# --------------------------------------------------------------------------- nginx


def nginx_exe() -> str:
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise ServerError("nginx is not installed (make peers, or apt-get install -y nginx-light)")


def nginx_version() -> str:
    try:
        r = subprocess.run([nginx_exe(), "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip().replace("nginx version: ", "")
    except (OSError, ServerError):
        return "?"


def start_nginx(workdir: Path) -> Server:
    """nginx, one worker, serving ``/small.txt`` (100 B) and ``/big.bin`` (1 MiB)."""
    exe = nginx_exe()
    prefix = workdir / "nginx"
    for d in ("logs", "tmp", "html"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    (prefix / "html" / "small.txt").write_bytes(SMALL_BODY)
    (prefix / "html" / "big.bin").write_bytes(random.Random(5).randbytes(BIG_SIZE))
    port = free_port()
    text = (
        NGINX_TEMPLATE.read_text()
        .replace("@USER_LINE@", "user root;" if os.geteuid() == 0 else "")
        .replace("@PORT@", str(port))
    )
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    argv = [exe, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "logs" / "error.log"),
            "-g", "daemon off;"]  # fmt: skip
    return Server("nginx", argv, port, prefix / "logs" / "stdout.log")


# --------------------------------------------------------------------------- hypercorn


def hypercorn_version() -> str:
    try:
        return importlib.metadata.version("hypercorn")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def start_hypercorn(workdir: Path) -> Server:
    """hypercorn (one worker, asyncio) serving ``asgi_server.app``: HTTP/1.1 and h2c."""
    if importlib.util.find_spec("hypercorn") is None:
        raise ServerError("hypercorn is not installed (make venv: pip install -e '.[test]')")
    port = free_port()
    env = {"PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return Server(
        "hypercorn", [sys.executable, "-m", "benchmarks.asgi_server", str(port)], port,
        workdir / "hypercorn.log", env=env, cwd=HERE.parent,
    )  # fmt: skip


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="gunpy-bench-"))
