"""Download a data set into the suite's data folder (needs network access).

    python scripts/fetch_data.py cifar10 [--data-dir data]
    python scripts/fetch_data.py cifar100
Digits needs no download (it ships with scikit-learn).
"""

import argparse
import sys

from lerac.data.cifar import VARIANTS, download_cifar
from lerac.errors import LeRaCError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(VARIANTS))
    parser.add_argument("--data-dir", default="data", help="the folder paths.data_dir points at")
    args = parser.parse_args()
    try:
        folder = download_cifar(args.data_dir, args.dataset)
    except LeRaCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset} is ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
