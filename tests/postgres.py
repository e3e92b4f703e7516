"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` on a free port of 127.0.0.1, in a temp dir.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``) or any
``initdb`` on PATH; without them the tests that need PostgreSQL are skipped, saying so. PostgreSQL refuses to run
as root, so as root (CI) the server runs as the ``postgres`` user that Debian's package creates. Password
authentication (scram) with a fresh random password, so tests can check that it never leaks.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's versioned folder (newest version first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(debian[-1]).parent if debian else None


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    user: str = "lab"
    password: str = ""
    host: str = "127.0.0.1"

    def env(self) -> dict[str, str]:
        """The standard libpq variables that the shared storage profile reads."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password}

    def _run(self, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, text=True)

    def init(self) -> None:
        password_file = self.data_dir.parent / "password"
        password_file.write_text(self.password + "\n")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=scram-sha-256",
                  f"--pwfile={password_file}", "--encoding=UTF8", "--no-sync")
        password_file.unlink()

    def start(self) -> None:
        # The socket goes in the data dir: Debian's /var/run/postgresql may not exist or be writable.
        options = f"-h {self.host} -p {self.port} -k {self.data_dir} -c fsync=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                  "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=5)

    def query(self, database: str, sql: str) -> list[tuple]:
        with self.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.fetchall()
        connection.close()
        return rows

    def create_database(self, name: str) -> None:
        connection = self.connect()
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()

    def dump(self, database: str) -> str:
        """The whole database as SQL text (to search it for what must not be there)."""
        result = subprocess.run([str(self.bin_dir / "pg_dump"), "--data-only", database], env={**os.environ,
                                **self.env()}, check=True, capture_output=True, text=True)
        return result.stdout


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL on 127.0.0.1 for the test module, removed afterwards."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root, and no runuser to start PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="lab-postgres-"))
    server = PostgresServer(bin_dir, root / "data", free_port(), password=secrets.token_urlsafe(18))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        server.init()
        server.start()
        yield server
    finally:
        if (server.data_dir / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
