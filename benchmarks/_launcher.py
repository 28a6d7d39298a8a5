"""A small process that starts the benchmark's subprocesses and reports their peak RSS.

Linux keeps the peak RSS of a process across ``execve``: a child forked from a large
process (the benchmark's parent, which has loaded the data) starts with that process's
RSS as its ``ru_maxrss``. So the parent starts this launcher first, while it is still
small (standard library only), and the launcher forks every measured subprocess.

Protocol: one JSON object a line on stdin, ``{"argv", "env", "log", "timeout"}``; one JSON
object a line on stdout, ``{"status", "maxrss_kib", "timed_out"}``. It ends at end of input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def run(argv: list[str], env: dict[str, str], log: str, timeout: float) -> dict:
    """Run ``argv``, wait for it with ``os.wait4``; kill it (by its pid) after ``timeout``."""
    with open(log, "w") as stream:
        process = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            break
        if time.monotonic() > deadline and not timed_out:
            os.kill(process.pid, signal.SIGKILL)
            timed_out = True
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    return {"status": process.returncode, "maxrss_kib": usage.ru_maxrss, "timed_out": timed_out}


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            reply = run(request["argv"], request["env"], request["log"], request["timeout"])
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
