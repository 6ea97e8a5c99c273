"""``python -m remask`` runs the ``remask`` command line."""

from remask.cli import main

if __name__ == "__main__":
    main()
