"""PostgreSQL for the cloud's tests and bench (docs/deployment.md): Debian's `postgresql`
package, a database cluster of its own (initdb into a temporary directory) on a free loopback
port, stopped at exit, the way tools/bench/broker.py starts Mosquitto.

initdb and the server refuse to run as root: as root they run as the `postgres` user (the
package makes it), which then owns the directory. Trust authentication on loopback only (a
throwaway cluster); `durable=False` turns fsync off, which survives the server's crash (the
kernel still has the writes) but not the machine's: tests only. Runs in the caller's thread.
"""
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from tools.bench import children
from tools.bench.broker import free_port

USER = "postgres"  # the cluster's superuser, and the system user it runs as under root


def bin_dir():
    """The newest installed server's bin directory (Debian keeps them per version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def missing():
    """Why PostgreSQL cannot be started here, as a sentence; None if it can."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


class Postgres:
    """One server; stop() / kill() end it, start() brings it back on the same port and data."""

    def __init__(self, port=None, durable=True):
        self.bin = bin_dir()
        self.port = port or free_port()
        self.durable = durable
        self.dir = tempfile.mkdtemp(prefix="postgres-")
        self.data = os.path.join(self.dir, "data")
        children.adopt(self.dir, lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.proc = None
        self.as_user = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, *cmd):
        subprocess.run([os.path.join(self.bin, cmd[0]), *cmd[1:]], check=True, cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self.as_user)

    def start(self, timeout_s=30):
        if not os.path.exists(self.data):
            self._run("initdb", "-D", self.data, "-U", USER, "--auth=trust", "--no-sync",
                      "-E", "UTF8", "--locale=C")
        cmd = [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(self.port),
               "-h", "127.0.0.1", "-k", self.data, "-c", "max_connections=300"]
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with open(os.path.join(self.dir, "postgres.log"), "ab") as log:
            # Its own session: a Ctrl-C at the terminal is for the launcher, not the server.
            self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, **self.as_user)
        children.adopt(self, self.stop)
        deadline = time.monotonic() + timeout_s
        while subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                              "-p", str(self.port), "-U", USER]).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start:\n" + self.log()[-2000:])
            time.sleep(0.1)
        return self

    def log(self):
        with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
            return f.read()

    def create_db(self, name):
        """A new empty database; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def url(self, name):
        return "postgresql://%s@127.0.0.1:%d/%s" % (USER, self.port, name)

    def _end(self, sig, wait_s=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        children.release(self)

    def stop(self):
        """A fast shutdown (SIGINT): sessions are cut, everything committed is on disk."""
        self._end(signal.SIGINT)

    def kill(self):
        """A crash (SIGQUIT, immediate shutdown): no checkpoint; the next start recovers
        from the write-ahead log."""
        self._end(signal.SIGQUIT)
