"""demo.py: not implemented yet (issue: `make demo`). This placeholder does no work."""

import sys

if __name__ == "__main__":
    sys.exit("make demo is not implemented yet: see the open issues of this project.")
