"""One client in its own process: ``python -m benchmarks.worker SPEC_JSON``.

SPEC is ``{"client": name, "workload": name, "cfg": {...}}``.  The worker imports the
client's module, prints ``READY`` and then obeys one command per stdin line:

``RUN DURATION WARMUP``  run the workload once; prints ``MARK`` when the measured
                         window starts, then ``RESULT <json>``
``SCALE N``              run the scale workload with N connections; ``RESULT <json>``
``EXIT``                 leave (``os._exit``: a client's leftover threads cannot hang it)

A failure is reported as ``RESULT {"error": "..."}``; the harness goes on without it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback

from .clients import CLIENTS
from .clients._common import Meter
from .servers import raise_nofile


def main() -> None:
    spec = json.loads(sys.argv[1])
    cfg = spec["cfg"]
    if spec["workload"] == "scale":
        raise_nofile()
    mod = importlib.import_module(f"benchmarks.clients.{CLIENTS[spec['client']]}")
    fn = mod.WORKLOADS[spec["workload"]]
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "EXIT":
            break
        try:
            if cmd[0] == "RUN":
                res = fn(cfg, Meter(float(cmd[1])), float(cmd[2]))
            elif cmd[0] == "SCALE":
                res = fn(cfg, int(cmd[1]))
            else:
                res = {"error": f"unknown command {line!r}"}
        except BaseException:
            res = {"error": traceback.format_exc(limit=8)}
        out.write("RESULT " + json.dumps(res) + "\n")
        out.flush()
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
