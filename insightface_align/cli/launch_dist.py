"""Start an MXNet parameter-server job: scheduler, servers and workers (dist_sync kvstore).

On one machine (loopback) everything starts here:
  tools/launch_dist.py --workers 2 --servers 1 -- tools/train.py --recipe demo --data data/synth2d \\
      --kvstore dist_sync
Across machines, run the same command on each host with --role and --host pointing at the
scheduler's address (the usual DMLC_* variables are set from the options):
  host A: tools/launch_dist.py --role scheduler,server --host A --workers 2 --servers 1
  host B: tools/launch_dist.py --role worker --host A --workers 2 --servers 1 -- tools/train.py ...
Each worker reads its own shard (kvstore rank k of n) of the training records.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from .common import HelpFormatter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="number of workers (DMLC_NUM_WORKER)")
    p.add_argument("--servers", type=int, default=1, help="number of parameter servers (DMLC_NUM_SERVER)")
    p.add_argument("--host", default="127.0.0.1", help="the scheduler's address (DMLC_PS_ROOT_URI)")
    p.add_argument("--port", type=int, default=0, help="the scheduler's port (default: a free one)")
    p.add_argument("--role", default="all",
                   help="which processes to start here: all, or a comma list of scheduler, server, worker")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the worker command")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    roles = {"scheduler", "server", "worker"} if args.role == "all" else set(args.role.split(","))
    if "worker" in roles and not args.command:
        p.error("workers need a command after --")
    if args.workers < 1 or args.servers < 1:
        p.error("--workers and --servers must be >= 1")
    args.roles = roles
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def role_env(role: str, args) -> dict:
    env = dict(os.environ)
    env.update({"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": args.host, "DMLC_PS_ROOT_PORT": str(args.port),
                "DMLC_NUM_SERVER": str(args.servers), "DMLC_NUM_WORKER": str(args.workers)})
    if args.host.startswith("127."):
        env.setdefault("DMLC_NODE_HOST", "127.0.0.1")
        env.setdefault("DMLC_INTERFACE", "lo")
    return env


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.port == 0:
        args.port = free_port()
    idle = [sys.executable, "-c", "import mxnet"]  # scheduler/server: importing mxnet runs the PS loop
    procs, workers = [], []
    try:
        if "scheduler" in args.roles:
            procs.append(subprocess.Popen(idle, env=role_env("scheduler", args)))
        if "server" in args.roles:
            procs += [subprocess.Popen(idle, env=role_env("server", args)) for _ in range(args.servers)]
        if "worker" in args.roles:
            cmd = args.command
            if cmd[0].endswith(".py"):
                cmd = [sys.executable] + cmd
            workers = [subprocess.Popen(cmd, env=role_env("worker", args)) for _ in range(args.workers)]
            procs += workers
        codes = [w.wait() for w in workers] if workers else [p.wait() for p in procs]
        deadline = time.time() + 30
        for p in procs:
            if p.poll() is None:
                p.wait(timeout=max(1, deadline - time.time()))
        bad = [c for c in codes if c != 0]
        if bad:
            print(f"launch_dist: {len(bad)} process(es) failed (exit codes {bad})", file=sys.stderr)
            return 1
        return 0
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        return 130
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
