"""Download a data set into the suite's data folder: `lerac-fetch` (lerac/suite/fetch.py).

    python scripts/fetch_data.py cifar10 [--data-dir data]
    python scripts/fetch_data.py --check
Digits needs no download (it ships with scikit-learn).
"""

import sys

from lerac.suite.fetch import main

if __name__ == "__main__":
    sys.exit(main())
