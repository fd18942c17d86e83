"""A private, throw-away PostgreSQL server for tests, started by the test suite itself.

Binaries: the PyPI wheel ``pgserver`` (a ``dev`` extra) bundles PostgreSQL 16 (``initdb``,
``postgres``) for manylinux x86_64, macOS and Windows, CPython 3.10-3.12. Only those binaries are
used: this module finds them with ``importlib.util.find_spec`` (without importing ``pgserver``)
and drives them itself, instead of calling ``pgserver.get_server()``, because as root the latter
creates a system user with ``useradd``, chmods go+rx every ancestor of the data directory and of
site-packages (``/root`` included) and keeps a lock file and an atexit hook in
``$XDG_RUNTIME_DIR``; none of that is wanted from a test run.

Network: the server is started with ``listen_addresses=''``, so it opens no TCP socket at all,
not even on loopback. Clients reach it only through a Unix socket in a fresh 0700 directory
under the system temporary directory (short enough for the 107-byte socket path limit).
Authentication is ``trust``, which is safe only because nothing but the owner (and root) can
reach that socket.

Root: PostgreSQL refuses to run as root (``initdb`` and ``postgres`` check the effective uid).
When the tests run as root (this sandbox and CI do), ``initdb`` and ``postgres`` are run as the
existing unprivileged account ``nobody`` (its uid and primary gid, supplementary groups dropped,
via ``subprocess``'s ``user``/``group``/``extra_groups``); no account is created and no
permission outside the temporary directory is touched. Because the binaries may sit under a
directory ``nobody`` cannot traverse (a venv under ``/root``, pytest's 0700
``/tmp/pytest-of-root``), the wheel's ``bin``/``lib``/``share`` and ``pgserver.libs`` are
hard-linked (or, across filesystems, copied: 27 MB) into the temporary directory, which is chowned
to ``nobody``; only world-readable files are linked and only the copies' modes are changed, so
the installed wheel is never modified. The copy keeps the wheel's relative layout (RPATH
``$ORIGIN/../../../pgserver.libs``; PostgreSQL finds ``lib`` and ``share`` relative to its
executable), so it is self-contained. As an ordinary user nothing is linked, copied or chowned.

Lifetime: ``postgres`` is a direct child of the test process. On exit it gets a fast shutdown
(SIGINT, then SIGQUIT/SIGKILL if it lingers) and the temporary directory is removed. On Linux the
server also gets SIGQUIT (immediate shutdown) if the test process dies without cleaning up.

If the server cannot be started here (no wheel for the platform, no ``nobody``, a setuid refused
by a user namespace...), the tests skip with "PostgreSQL could not be started: <reason>"; when
``CI`` is set (as ``.ci/run`` runs) that is a failure instead, so CI cannot go green without
actually having exercised PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

DATABASE = "optuna_test"
SUPERUSER = "postgres"
PORT = 5432  # names the socket file only (.s.PGSQL.5432): no TCP port is opened
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
UNPRIVILEGED_USER = "nobody"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started on this machine; the message says why."""


def _pginstall() -> Path:
    """The ``pginstall`` directory of the installed ``pgserver`` wheel (bin/, lib/, share/)."""
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            "the pgserver package is not installed (pip install -e '.[dev]'; it has wheels for "
            "CPython 3.10-3.12 on manylinux x86_64, macOS and Windows only)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    for exe in ("initdb", "postgres"):
        if not (root / "bin" / exe).is_file():
            raise PostgresUnavailable(f"pgserver has no {exe} binary at {root / 'bin'}")
    return root


def _run_as() -> dict:
    """subprocess keyword arguments that drop root to ``nobody``; empty when not root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root and there is no {UNPRIVILEGED_USER!r} account to run PostgreSQL as"
        ) from exc
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file that anyone may already read (and run, if it is a program), else copy it
    and make the copy so. Never changes the original: only the copy's mode is touched."""
    mode = os.stat(src).st_mode
    if mode & stat.S_IROTH and (mode & stat.S_IXOTH or not mode & stat.S_IXUSR):
        try:
            os.link(src, dst)
            return dst
        except OSError:  # another filesystem, links not allowed...
            pass
    shutil.copy2(src, dst)
    extra = stat.S_IRGRP | stat.S_IROTH
    if mode & stat.S_IXUSR:
        extra |= stat.S_IXGRP | stat.S_IXOTH
    os.chmod(dst, (mode & 0o777) | extra)
    return dst


def _copy_binaries(pginstall: Path, dest: Path) -> Path:
    """Make the server's binaries readable by ``nobody`` under ``dest``, in the wheel's layout.

    auditwheel put libpq in ``site-packages/pgserver.libs``, found through the binaries' RPATH
    ``$ORIGIN/../../../pgserver.libs``: so the copy is ``dest/pgserver/pginstall`` beside
    ``dest/pgserver.libs``. Headers (include/, 7 MB) are not needed to run a server. Files are
    hard-linked where possible (instant), copied otherwise (27 MB); directories are 0755.
    """
    copied = dest / "pgserver" / "pginstall"
    trees = [(pginstall, copied)]
    libs = pginstall.parent.parent / "pgserver.libs"
    if libs.is_dir():
        trees.append((libs, dest / "pgserver.libs"))
    for src, dst in trees:
        shutil.copytree(
            src, dst, ignore=shutil.ignore_patterns("include"), copy_function=_link_or_copy
        )
    for dirpath, _, _ in os.walk(dest):
        os.chmod(dirpath, 0o755)
    return copied


def _server_env() -> dict[str, str]:
    # No PG* variable of the caller's (PGDATA, PGPORT, PGHOST...) may steer the server or initdb.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    return env


def _parent_death_signal():
    """A preexec_fn (Linux): SIGQUIT the postmaster if the test process dies without cleanup.

    ``prctl`` is looked up here, in the parent: the child only calls it. It runs after the uid
    change, which would otherwise clear the parent-death signal.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigquit = 1, int(signal.SIGQUIT)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigquit, 0, 0, 0)

    return preexec


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no server log)"
    return " | ".join(text[-lines:]) or "(empty server log)"


def _wait_until_ready(proc: subprocess.Popen, url_kwargs: dict, log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise PostgresUnavailable(f"postgres exited with {proc.returncode}: {_log_tail(log)}")
        try:
            psycopg2.connect(**url_kwargs, connect_timeout=2).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"not ready after {START_TIMEOUT_S:.0f} s ({exc}): {_log_tail(log)}"
                ) from exc
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0)):
        proc.send_signal(sig)  # fast shutdown, then immediate shutdown
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


@contextlib.contextmanager
def postgres_url(base_dir: str | os.PathLike | None = None) -> Iterator[str]:
    """Start a private PostgreSQL server; yield an SQLAlchemy URL to a fresh, empty database.

    The URL (``postgresql+psycopg2://postgres@/optuna_test?host=<socket dir>&port=5432``) is
    usable as an Optuna ``storage``. ``base_dir`` (default: the system temporary directory) gets
    a fresh subdirectory holding the binaries' copy, the data directory, the socket and the log;
    as root it must be traversable by ``nobody`` (pytest's ``tmp_path`` is not). The server is
    stopped and the subdirectory removed on exit. Raises :class:`PostgresUnavailable` if the
    server cannot be started.
    """
    if sys.platform == "win32":
        raise PostgresUnavailable("this helper needs Unix-domain sockets (not on Windows)")
    try:
        import psycopg2
    except ImportError as exc:
        raise PostgresUnavailable(f"the psycopg2 driver is not installed ({exc})") from exc
    pginstall = _pginstall()
    run_as = _run_as()
    top = Path(tempfile.mkdtemp(prefix="rashomon-pg-", dir=base_dir))
    proc: subprocess.Popen | None = None
    try:
        if run_as:
            pginstall = _copy_binaries(pginstall, top / "pkg")
            os.chown(top, run_as["user"], run_as["group"])
        data, sock, log = top / "data", top / "sock", top / "server.log"
        sock.mkdir(mode=0o700)
        if run_as:
            os.chown(sock, run_as["user"], run_as["group"])
        env = _server_env()
        try:
            subprocess.run(
                [
                    str(pginstall / "bin" / "initdb"),
                    *("-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"),
                    *("--locale=C", "--no-sync", "--no-instructions"),
                ],
                env=env,
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                umask=0o077,
                **run_as,
            )
        except subprocess.CalledProcessError as exc:
            out = (exc.stderr or exc.stdout or "").strip().replace("\n", " | ")
            raise PostgresUnavailable(f"initdb failed ({exc.returncode}): {out}") from exc
        except OSError as exc:  # e.g. setuid refused inside a user namespace
            raise PostgresUnavailable(f"initdb could not be run: {exc}") from exc
        settings = {
            "listen_addresses": "",  # no TCP socket at all, not even loopback
            "unix_socket_directories": str(sock),
            "unix_socket_permissions": "0700",
            "port": str(PORT),
            # A test server: durability is not wanted, speed is.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "32MB",
        }
        argv = [str(pginstall / "bin" / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with open(log, "ab") as log_file:
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    umask=0o077,
                    start_new_session=True,  # a Ctrl-C in the terminal is not its business
                    preexec_fn=_parent_death_signal(),
                    **run_as,
                )
            except OSError as exc:
                raise PostgresUnavailable(f"postgres could not be run: {exc}") from exc
        admin = {"host": str(sock), "port": PORT, "user": SUPERUSER, "dbname": "postgres"}
        _wait_until_ready(proc, admin, log)
        conn = psycopg2.connect(**admin)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()
        yield (
            f"postgresql+psycopg2://{SUPERUSER}@/{DATABASE}"
            f"?host={quote(str(sock), safe='/')}&port={PORT}"
        )
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module", name="postgres_storage_url")
def postgres_storage_url_fixture() -> Iterator[str]:
    """Fixture ``postgres_storage_url``: one private PostgreSQL server per test module, its URL.

    A test module gets it with ``from _postgres import postgres_storage_url_fixture  # noqa: F401``
    (``tests/`` is no package: pytest puts it on ``sys.path``, as it does for conftest.py) and
    takes a ``postgres_storage_url`` argument. The function's own name differs from the fixture's
    so that the argument does not shadow the import (ruff F811).
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_url())
        except PostgresUnavailable as exc:
            reason = f"PostgreSQL could not be started: {exc}"
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"{reason} (CI is set: failing, not skipping)", pytrace=False)
            pytest.skip(reason)
        yield url
