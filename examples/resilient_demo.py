"""ResilientClient surviving faults, offline: no credentials, no internet.

The same as ``resilient-tg demo``: starts a local MTProto test server and a fault
proxy, runs a ResilientClient on a FileStore in a temporary directory, has a second
user send it messages, and breaks the network on the way (reset, refused connects, a
black hole, a server restart, a process restart that resumes from the stored
session). Prints how fast each fault was found and repaired, and exits 0 only if
every message arrived exactly once.

    python examples/resilient_demo.py [--fast] [--json]
"""

from __future__ import annotations

import sys

from resilient_tg.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
