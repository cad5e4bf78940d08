"""PostgreSQL 15 with logical decoding (``wal_level=logical``, wal2json), as a private cluster.

The cluster lives in the stack's run directory and is started directly (not the system service),
as the ``postgres`` user when we are root, because the server refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress, StackError
from retail_backbone.stack.components.obtain import apt_packages
from retail_backbone.stack.config import StackConfig
from retail_backbone.stack.process import ProcessSpec

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Database and role the suite uses; trust auth on loopback only.
DATABASE = "backbone"
USER = "backbone"


def dsn(cfg: StackConfig, dbname: str = DATABASE) -> str:
    """Libpq connection string for the stack's PostgreSQL."""
    return f"host={cfg.host} port={cfg.port('postgres')} user={USER} dbname={dbname}"


class Postgres(Component):
    name = "postgres"
    summary = "PostgreSQL 15 + wal2json (Debian packages postgresql-15, postgresql-15-wal2json)"
    port_keys = ("postgres",)
    start_timeout = 60.0

    def _os_user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        apt_packages(
            self.name,
            ["postgresql-15", "postgresql-15-wal2json"],
            cfg.log_path("postgres-obtain"),
            progress,
        )

    def prepare(self, cfg: StackConfig) -> None:
        data = cfg.data_dir(self.name)
        socket_dir = cfg.run_dir / "sockets"
        user = self._os_user()
        for path in (data.parent, socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        if user:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            # The postgres user must reach its data dir: open the run dir's path for traversal.
            for path in (cfg.run_dir, cfg.run_dir / "data"):
                path.chmod(path.stat().st_mode | 0o711)
            shutil.chown(socket_dir, uid, gid)
        if (data / "PG_VERSION").is_file():
            return
        data.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(data, user, user)
        argv = [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = cfg.log_path("postgres")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(self.name, "initdb failed", log)

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        settings = {
            "listen_addresses": cfg.host,
            "port": str(cfg.port("postgres")),
            "unix_socket_directories": str(cfg.run_dir / "sockets"),
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
            "shared_buffers": "128MB",
            "fsync": "on",
        }
        argv = [str(PG_BIN / "postgres"), "-D", str(cfg.data_dir(self.name))]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return [ProcessSpec(name="postgres", argv=argv, user=self._os_user())]

    def check(self, cfg: StackConfig) -> None:
        """``select 1`` as the suite's user, then make sure its database exists."""
        import psycopg

        try:
            with psycopg.connect(dsn(cfg, "postgres"), connect_timeout=3, autocommit=True) as conn:
                conn.execute("select 1").fetchone()
                exists = conn.execute(
                    "select 1 from pg_database where datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f'create database "{DATABASE}"')
        except psycopg.OperationalError as exc:
            raise NotReady(str(exc).strip().splitlines()[0]) from exc
