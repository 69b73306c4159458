"""`python tests/slow_pointkd.py SECONDS ARGS...`: the pointkd command, each batch of record
rows followed by a pause of SECONDS, so a test can stop a recording midway (SIGKILL, a second
process, a full disk) at a moment of its choosing. The pause is patched in here, in the test
process's own interpreter; pointkd itself has no such hook."""

import sys
import time

from pointkd.cli import main
from pointkd.records.writer import ShardWriter


def _slowed(write, delay: float):
    def slow_write(self, rows):
        write(self, rows)
        time.sleep(delay)

    return slow_write


if __name__ == "__main__":
    ShardWriter.write = _slowed(ShardWriter.write, float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
