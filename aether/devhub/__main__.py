"""`python -m aether.devhub`: run the development Hub (same options as `aether hub`)."""

from aether.devhub.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
