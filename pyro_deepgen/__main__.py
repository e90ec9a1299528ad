import os
import sys

from pyro_deepgen.cli import main
from pyro_deepgen.distributed import launched_world_size

if __name__ == "__main__":
    code = main()
    if launched_world_size() > 1:
        # under torchrun, after the process group is gone: skip the interpreter's teardown,
        # in which torch 2.13 can abort ("terminate called without an active exception";
        # see docs/distributed.md)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
