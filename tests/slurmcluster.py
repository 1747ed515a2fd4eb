"""A real one-node SLURM cluster on this machine, for tests/test_slurm.py.

Debian's slurm-wlm (slurmctld, slurmd, the client commands) and munge, started from a directory of their
own: a fresh munge key and socket, a slurm.conf naming this host as controller and as the one node (all
its CPUs, one partition), free ports, state, spool and logs all in that directory. Nothing is written
under /etc or /run, so it runs beside a cluster the machine may already have. Client commands find it
through SLURM_CONF. slurmd runs jobs as root; the cluster needs root to start.

Job states are read from the controller (`scontrol show job -o`), never inferred from files: there is no
accounting database here (slurmdbd), so `sacct` has nothing to read; finished jobs stay in the
controller's memory for MinJobAge (10 minutes).
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}


def missing():
    """Why a cluster cannot start here, or None."""
    absent = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None
              and not Path("/usr/sbin", name).exists()]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} not found): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "a one-node SLURM cluster runs its jobs through slurmd as root; these tests are not root"
    return None


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _daemon(name):
    return shutil.which(name) or str(Path("/usr/sbin", name))


class Cluster:
    """Start with Cluster(directory).start(); env is what a client command needs; stop() ends it all."""

    def __init__(self, root):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.pids = {}

    def start(self, timeout=60):
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.socket = r / "munge" / "socket"
        subprocess.run([_daemon("munged"), "--force", f"--socket={self.socket}", f"--key-file={key}",
                        f"--pid-file={r / 'munge' / 'pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'seed'}"], check=True, capture_output=True)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text("\n".join([
            "ClusterName=gpvtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.socket}",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            "MinJobAge=600",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName=gpv Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        try:
            subprocess.run([_daemon("slurmctld"), "-c"], check=True, capture_output=True, env=self.env)
            subprocess.run([_daemon("slurmd"), "-N", self.host], check=True, capture_output=True, env=self.env)
            deadline = time.monotonic() + timeout
            while self.client("sinfo", "-h", "-o", "%T", check=False).strip() != "idle":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node never became idle; see {r / 'log'}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, *argv, check=True):
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def jobs(self, job):
        """[{field: value}] of JOB as the controller has it: one entry per array task (or the job alone)."""
        out = self.client("scontrol", "show", "job", "-o", str(job))
        return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.splitlines()]

    def states(self, job):
        """{array task id (or None): JobState} of JOB."""
        return {j.get("ArrayTaskId") if j.get("ArrayTaskId") not in (None, "N/A") else None: j["JobState"]
                for j in self.jobs(job)}

    def wait(self, job, until=lambda jobs: all(j["JobState"] in TERMINAL for j in jobs), timeout=300):
        """Poll the controller until UNTIL(JOB's entries) holds; returns the entries."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job)
            if jobs and until(jobs):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job}: {[(j.get('ArrayTaskId'), j['JobState']) for j in jobs]}")
            time.sleep(0.5)

    def stop(self):
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=self.env, timeout=60)
        subprocess.run(["scontrol", "shutdown"], capture_output=True, env=self.env, timeout=60)
        for pidfile in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munge" / "pid"):
            deadline = time.monotonic() + 20
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                continue
            if pidfile.name == "pid":
                subprocess.run([_daemon("munged"), "--stop", f"--socket={self.socket}"], capture_output=True)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid):
    """Whether PID runs (a zombie, exited but not yet reaped by whoever adopted the daemon, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
