"""Small process and port helpers for the local stack (no Kafka or Postgres knowledge here)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.errors import StackError


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_port_free(port: int, what: str, setting: str) -> None:
    if not port_is_free(port):
        raise StackError(
            f"port {port} for {what} is taken by another process; "
            f"stop it or choose another port with {setting}"
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL: the broker gets its clean shutdown first."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_for(lambda: not pid_alive(pid), timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(lambda: not pid_alive(pid), 5.0)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def which(program: str, hint: str) -> str:
    found = shutil.which(program)
    if not found:
        raise StackError(f"{program} not found: {hint}")
    return found


def is_root() -> bool:
    return os.geteuid() == 0


def service_user(name: str = "postgres") -> pwd.struct_passwd:
    """The non-root OS user that runs PostgreSQL when we are root (initdb refuses root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        return pwd.getpwnam(name)


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            try:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass


def run(
    cmd: Sequence[str],
    *,
    user: pwd.struct_passwd | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise one StackError with its last output line
    (``check=False``: return the failed run, for a caller that reads the tool's own errors).

    With ``user``, the command also gets that user's HOME: libpq looks for a client
    certificate in ``~/.postgresql`` on every TLS connection, and a server started as the
    service user with root's HOME would fail every one of its own outgoing TLS connections
    (a replica's walreceiver) with "Permission denied" on ``/root/.postgresql``.
    """
    if user:
        env = {**(os.environ if env is None else env), "HOME": user.pw_dir, "USER": user.pw_name,
               "LOGNAME": user.pw_name}
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    except FileNotFoundError:
        raise StackError(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{what or cmd[0]} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0 and check:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise StackError(f"{what or ' '.join(cmd[:2])} failed: {last}")
    return done
