"""A throwaway PostgreSQL cluster and a real `mlflow server` for the team-tracking-server test.

Plain helpers (the fixtures live in tests/test_team_server.py). PostgreSQL comes from Debian's
`postgresql` package (`make setup` installs it); when it is missing the test fails with that hint
instead of skipping, since a skipped integration test is silently untested.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PG_ROOT = Path("/usr/lib/postgresql")
SETUP_HINT = "run `make setup` (it installs Debian's postgresql)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl; fails with the set-up hint."""
    versions = []
    if PG_ROOT.is_dir():
        for d in PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", d.name) and (d / "bin/initdb").is_file() and (d / "bin/pg_ctl").is_file():
                versions.append((tuple(int(p) for p in d.name.split(".")), d / "bin"))
    if not versions:
        pytest.fail(f"PostgreSQL server binaries not found under {PG_ROOT}/<version>/bin: {SETUP_HINT}", pytrace=False)
    return max(versions)[1]


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail(
            f"running as root needs `runuser` (util-linux) to start PostgreSQL as postgres: {SETUP_HINT}", pytrace=False
        )
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"no `postgres` user to run PostgreSQL as: {SETUP_HINT}", pytrace=False)
    return [runuser, "-u", "postgres", "--"]


def _make_traversable(path: Path) -> None:
    """Every folder above `path` searchable (o+x, not readable) so the postgres user reaches it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"({path} unreadable: {exc})"


class PostgresCluster:
    """initdb + postgres in a fresh folder: TCP on 127.0.0.1:<free port> with password (scram) auth, the unix
    socket inside the folder (trusted, for the superuser's set-up commands only)."""

    superuser = "postgres"

    def __init__(self) -> None:
        self.bin = pg_bin_dir()
        self.prefix = _as_postgres()
        # Not under pytest's tmp folder: that one is 0700 root, and the postgres user must reach the cluster.
        self.root = Path(tempfile.mkdtemp(prefix="artgan-pg-"))
        _make_traversable(self.root)
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.sockets.mkdir()
        if self.prefix:
            import pwd

            pw = pwd.getpwnam("postgres")
            for p in (self.root, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.started = False

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=120, cwd=self.root, **kw)
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
                f"\n--- server log ---\n{_tail(self.log)}"
            )
        return out

    def start(self) -> None:
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.superuser,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ]
        )
        # The postmaster runs as this process's child rather than through `pg_ctl start`, which daemonises it:
        # where PID 1 reaps no orphans (containers) every run would leave a zombie behind.
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.sockets}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            cwd=self.root,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{_tail(self.log)}")
            ready = subprocess.run(
                [
                    *self.prefix,
                    str(self.bin / "pg_isready"),
                    "-q",
                    "-h",
                    str(self.sockets),
                    "-p",
                    str(self.port),
                    "-U",
                    self.superuser,
                ],
                cwd=self.root,
                timeout=30,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"postgres not ready after 60 s:\n{_tail(self.log)}")

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; the output unaligned, tuples only."""
        return self._run(
            [
                str(self.bin / "psql"),
                "-h",
                str(self.sockets),
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ]
        ).stdout

    def create_db(self, name: str, owner: str, password: str | None = None) -> None:
        if password is not None:
            self.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE {name} OWNER {owner}")

    def uri(self, user: str, password: str, db: str) -> str:
        """The SQLAlchemy URI. The driver is spelled out: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg
        (version 3), SQLAlchemy 1.4/2.0 as psycopg2; `+psycopg2` means psycopg2-binary with either."""
        return f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """pg_ctl stop -m fast (the postmaster ends its sessions and exits), then reap it; the folder goes."""
        try:
            if self.started:
                subprocess.run(
                    [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                    capture_output=True,
                    timeout=60,
                    cwd=self.root,
                )
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
                self._log_fh.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def mlflow_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's MLflow/DVC settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GX_ANALYTICS_ENABLED"] = "False"
    env.update(extra)
    return env


class MlflowServer:
    """`mlflow server` (the venv's) on 127.0.0.1:<free port>, its output in a log file."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "mlflow-server.log"
        mlflow = Path(sys.executable).parent / "mlflow"
        self.cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self._log_fh = open(self.log, "wb")
        # its own process group: the server forks uvicorn workers, and teardown kills them all
        self.proc = subprocess.Popen(
            self.cmd, cwd=workdir, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited ({self.proc.returncode}) before it was healthy:\n{_tail(self.log)}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        pytest.fail(
            f"mlflow server not healthy at {self.url}/health after {timeout:.0f} s:\n{_tail(self.log)}", pytrace=False
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)  # uvicorn waits for open keep-alive connections; a throwaway server need not
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        try:  # workers that outlived the parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log_fh.close()
