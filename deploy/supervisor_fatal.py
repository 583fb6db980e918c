"""supervisord event listener: a process that cannot stay up stops the platform.

supervisord restarts a process that dies; one that exits within ``startsecs``
``startretries`` times in a row is given up (FATAL). Rather than leave the
platform half up, this listener names the process and stops supervisord, which
stops the others. Protocol: supervisor's event listener protocol on stdin/stdout.
"""

import os
import signal
import sys


def main() -> None:
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        header = dict(item.split(":", 1) for item in sys.stdin.readline().split())
        payload = sys.stdin.read(int(header["len"]))
        fields = dict(item.split(":", 1) for item in payload.split())
        name = fields.get("processname", "?")
        sys.stderr.write(
            f"civitas: process '{name}' keeps dying and could not be restarted; "
            "stopping web, worker and beat (see its log above).\n"
        )
        sys.stderr.flush()
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()
        os.kill(os.getppid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
