import sys

from pyro_deepgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
