"""The suite touches nothing it did not create.

``mn -c`` (``mininet.clean.cleanup``) ``killall``s every ``ping``,
``controller`` and ``ryu-manager`` on the machine and deletes
``/tmp/*.log`` and ``/tmp/*.out``; the suite uses only ``topo.cleanup``.
This test plants exactly what that would destroy -- a ``/tmp/<unique>.log``
and ``.out`` file, and ``sleep`` processes whose process name and argv[0]
are ``ping``, ``controller`` and ``ryu-manager`` -- then runs a full Mininet
test module (``tests/mininet/test_mininet_overlay.py``: a nine-agent network,
agents killed and restarted, torn down) in a child pytest, and checks that
every planted thing survived. The planted processes and files are removed
afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from testing.netns import ROOT
from testing.procs import stop_process, wait_until

pytestmark = pytest.mark.mininet

MODULE = "tests/mininet/test_mininet_overlay.py"


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_a_full_mininet_module_leaves_other_peoples_files_and_processes(tmp_path):
    tag = uuid.uuid4().hex[:10]
    files = [f"/tmp/hygiene-{tag}.log", f"/tmp/hygiene-{tag}.out"]
    procs: dict[str, subprocess.Popen] = {}
    try:
        for path in files:
            with open(path, "w") as f:
                f.write("someone else's work\n")
        for name in ("ping", "controller", "ryu-manager"):
            exe = tmp_path / name
            shutil.copy("/bin/sleep", exe)  # process name (comm) = name, as killall sees it
            procs[name] = subprocess.Popen([name, "900"], executable=str(exe),
                                           start_new_session=True)
        for name, proc in procs.items():  # exec'd: the name killall would match
            wait_until(lambda p=proc, n=name: comm(p.pid) == n, timeout=5, message=name)

        env = {**os.environ, "PYTHONPATH": ROOT}
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                                "no:cacheprovider", MODULE], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=1500)
        assert child.returncode == 0, f"{MODULE} failed:\n{child.stdout[-4000:]}"
        assert " passed" in child.stdout.splitlines()[-1]

        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} (pid {proc.pid}) was killed by {MODULE}"
            assert comm(proc.pid) == name
        for path in files:
            with open(path) as f:
                assert f.read() == "someone else's work\n", f"{path} changed"
    finally:
        for proc in procs.values():
            stop_process(proc)
        for path in files:
            if os.path.exists(path):
                os.unlink(path)
