"""Helpers for integration tests that need a real Prefect server backed by PostgreSQL.

The production setup (docker-compose) runs Prefect on PostgreSQL because SQLite locks under
concurrent workers, so the integration tests exercise the same database engine:

    url = postgres_url()                  # None -> skip, except in CI where it raises
    if url is None:
        pytest.skip(postgres_unavailable_reason())
    db = fresh_database(url)              # each test gets its own, empty Prefect schema
    with start_prefect_server(tmp_path, db) as server:
        subprocess.run(["prefect", "work-pool", "create", ...], env={**os.environ, **server.env})

`postgres_url()` honours REALNET_TEST_PG_URL; otherwise it runs `.ci/postgres.sh`, which
installs (when root) and starts a local cluster on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SCRIPT = REPO_ROOT / ".ci" / "postgres.sh"

# apt-get install on a fresh CI machine dominates; a warm cluster answers in under a second.
POSTGRES_SCRIPT_TIMEOUT_S = 600
SERVER_START_TIMEOUT_S = 120.0

_unavailable_reason: str | None = None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@functools.lru_cache(maxsize=1)
def _run_postgres_script() -> tuple[str | None, str]:
    """Run .ci/postgres.sh once per test session; returns (url, reason-if-none)."""
    if not POSTGRES_SCRIPT.exists():
        return None, f"{POSTGRES_SCRIPT} is missing"
    if shutil.which("bash") is None:
        return None, "bash is not available to run .ci/postgres.sh"
    if os.name != "posix" or os.geteuid() != 0:
        # The script needs root for apt and the postgres system user; don't even try.
        return None, "not root, so .ci/postgres.sh cannot start PostgreSQL; set REALNET_TEST_PG_URL"
    try:
        proc = subprocess.run(
            ["bash", str(POSTGRES_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=POSTGRES_SCRIPT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f".ci/postgres.sh took longer than {POSTGRES_SCRIPT_TIMEOUT_S} s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("postgresql"):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        return None, f".ci/postgres.sh failed (exit {proc.returncode}):\n{tail}"
    return lines[-1].strip(), ""


def postgres_url(required: bool | None = None) -> str | None:
    """SQLAlchemy URL (postgresql+asyncpg://...) of a usable PostgreSQL, or None.

    ``required`` defaults to True under CI (env CI=true): there a missing database is a broken
    setup that must fail loudly instead of silently skipping the server tests.
    """
    global _unavailable_reason
    if required is None:
        required = _in_ci()
    explicit = os.environ.get("REALNET_TEST_PG_URL")
    if explicit:
        return explicit
    url, reason = _run_postgres_script()
    _unavailable_reason = reason or None
    if url is None and required:
        raise RuntimeError(f"PostgreSQL is required here but could not be started: {reason}")
    return url


def postgres_unavailable_reason() -> str:
    """Why the last ``postgres_url()`` returned None, for ``pytest.skip``."""
    return _unavailable_reason or "PostgreSQL is not available"


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    # asyncpg wants plain postgresql://; the +asyncpg driver tag is SQLAlchemy's.
    parts = urlsplit(sqlalchemy_url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def _with_database(sqlalchemy_url: str, name: str) -> str:
    return urlunsplit(urlsplit(sqlalchemy_url)._replace(path="/" + name))


def _admin_sql(sqlalchemy_url: str, statement: str) -> None:
    import asyncpg  # only the server tests need it; keep importing this module cheap

    async def run() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(sqlalchemy_url), timeout=30)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def fresh_database(sqlalchemy_url: str, prefix: str = "realnet_test") -> str:
    """Create an empty database next to the one in ``sqlalchemy_url`` and return its URL.

    A reused `prefect` database keeps work pools and deployments from earlier runs, which makes
    tests order-dependent; a new database per test costs about 0.1 s. Needs CREATEDB (the role
    from .ci/postgres.sh has it).
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_sql(sqlalchemy_url, f'CREATE DATABASE "{name}"')
    return _with_database(sqlalchemy_url, name)


def drop_database(sqlalchemy_url: str) -> None:
    """Drop the database named in ``sqlalchemy_url`` (connecting via the `postgres` db)."""
    name = urlsplit(sqlalchemy_url).path.lstrip("/")
    # WITH (FORCE) ends connections a just-stopped server may still leave behind (PG 13+).
    _admin_sql(_with_database(sqlalchemy_url, "postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_command() -> list[str]:
    """The `prefect` CLI of the interpreter running the tests, not whatever is first on PATH."""
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@dataclass
class ServerHandle:
    """A running `prefect server start` subprocess; use as a context manager or call stop()."""

    process: subprocess.Popen[bytes]
    api_url: str
    home: Path
    log_path: Path
    started_in_s: float = 0.0
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # What a child process (CLI, worker, flow run) needs to talk to this server.
        self.env = {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the whole process group: uvicorn and the services run as children."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_prefect_server(
    tmp_path: Path,
    db_url: str,
    port: int | None = None,
    timeout: float = SERVER_START_TIMEOUT_S,
) -> ServerHandle:
    """Start `prefect server start` on 127.0.0.1 against ``db_url`` and wait until healthy.

    Raises RuntimeError with the server's log tail if it exits or is not healthy in time.
    """
    port = port or free_port()
    home = Path(tmp_path) / "prefect_home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = Path(tmp_path) / "prefect-server.log"
    api_url = f"http://127.0.0.1:{port}/api"

    env = dict(os.environ)
    # An inherited API URL or profile would point the server's own client at another server.
    for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        env.pop(key, None)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The UI is not needed by tests and building its static files slows start-up.
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
    )
    cmd = [*prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group so stop() reaches every child and Ctrl-C in pytest does not.
            start_new_session=True,
        )
    handle = ServerHandle(process=process, api_url=api_url, home=home, log_path=log_path)

    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited with {process.returncode} before becoming healthy; "
                f"log tail:\n{handle.log_tail()}"
            )
        if _healthy(api_url):
            handle.started_in_s = time.monotonic() - t0
            return handle
        time.sleep(0.5)
    handle.stop()
    raise RuntimeError(
        f"prefect server at {api_url} not healthy after {timeout:.0f} s; log tail:\n{handle.log_tail()}"
    )
