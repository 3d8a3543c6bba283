"""``python -m resonate_sync``: the same command line as the ``resonate`` console script."""

from resonate_sync.cli import main

if __name__ == "__main__":
    main()
