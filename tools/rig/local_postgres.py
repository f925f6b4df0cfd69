"""A private PostgreSQL server on a free loopback port in a temp folder (tests, `egate bench fleet`).

Debian's `postgresql` package ships initdb/pg_ctl under /usr/lib/postgresql/<version>/bin; nothing is
started system-wide. PostgreSQL refuses to run as root, so when we are root the cluster is made and
run as the `postgres` system user (`runuser`), in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from egate.tools.rig.local_broker import free_port
from egate.tools.rig.local_service import LocalService


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def postgres_available() -> bool:
    return _bindir() is not None


class Postgres(LocalService):
    """`with Postgres() as pg: pg.dsn` -- a superuser `egate` with password auth on 127.0.0.1:<port>."""

    def __init__(self, workdir: Path | None = None, *, user: str = "egate", password: str | None = None) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self._bin = bindir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.dbname = "egate"
        # The data folder must belong to the user the server runs as; under root that is `postgres`,
        # which cannot enter pytest's 0700 tmp folders, so it gets a folder of its own in /tmp.
        self._as_postgres = os.geteuid() == 0
        self._own_dir = workdir is None or self._as_postgres
        self.workdir = Path(tempfile.mkdtemp(prefix="egate-pg-")) if self._own_dir else Path(workdir)  # type: ignore[arg-type]
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "postgres.log"
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self._started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def _run(self, *args: str | Path, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, input=input_text, timeout=120, cwd="/")

    def start(self) -> None:
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        init = self._run(
            self._bin / "initdb",
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout} {init.stderr}")
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB "
            "-c max_connections=40"
        )
        ctl = self._run(
            self._bin / "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", opts, "-w", "start"
        )
        if ctl.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {ctl.stdout} {ctl.stderr} {log}")
        self._started = True
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host=self.host,
                    port=self.port,
                    user=self.user,
                    password=self.password,
                    dbname="postgres",
                    autocommit=True,
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{self.dbname}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def new_database(self, name: str) -> str:
        """Create an empty database; returns its DSN (tests that must not see each other's rows)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        if self._started:
            self._run(self._bin / "pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            self._started = False
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
