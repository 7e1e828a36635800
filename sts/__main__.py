"""`python -m sts` runs the same command line as `simple_tensorflow_serving`."""

from sts.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
