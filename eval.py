"""eval.py: not implemented yet (see the project's open issues). This placeholder does no work."""

import sys

if __name__ == "__main__":
    sys.exit("eval.py is not implemented yet: see the open issues of this project.")
