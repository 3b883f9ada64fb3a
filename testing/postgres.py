"""A throwaway PostgreSQL server for tests: Debian's binaries, a temp dir, a Unix socket.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` as the ``postgres`` user
(PostgreSQL refuses to run as root) in a fresh directory, listens on a Unix
socket only (no TCP port to collide with), creates one database and one
role, and ``stop`` removes the cluster and its directory. Nothing else on the
machine is touched: no system cluster is started or configured.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from testing.procs import free_port

USER = "postgres"


def pg_bin() -> str:
    """The newest installed ``/usr/lib/postgresql/N/bin`` (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self, db: str = "measure", role: str = "measure") -> None:
        self.db, self.role = db, role
        self.bin = pg_bin()
        self.dir = tempfile.mkdtemp(prefix="measure-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.port = free_port()
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}@/{self.db}?host={self.sock}&port={self.port}"

    def _as_postgres(self, *cmd: str, timeout: float = 60) -> None:
        subprocess.run(["runuser", "-u", USER, "--", *cmd], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> PostgresServer:
        shutil.chown(self.dir, USER, USER)
        os.chmod(self.dir, 0o755)
        self._as_postgres(f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", USER,
                          "--no-sync")
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-t", "30", "-l",
                          os.path.join(self.dir, "log"), "-o",
                          f"-k {self.sock} -p {self.port} -c listen_addresses='' "
                          "-c fsync=off", "start")
        self.started = True
        for sql in (f"CREATE ROLE {self.role} LOGIN", f"CREATE DATABASE {self.db} "
                    f"OWNER {self.role}"):
            self._as_postgres(f"{self.bin}/psql", "-h", self.sock, "-p", str(self.port),
                              "-U", USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                              "-c", sql)
        return self

    def stop(self) -> None:
        if self.started:
            subprocess.run(["runuser", "-u", USER, "--", f"{self.bin}/pg_ctl", "-D", self.data,
                            "-m", "immediate", "-w", "stop"], check=False, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()
