"""`python -m aether_hub`: run the development Hub (same options as `aether hub`)."""

from aether_hub.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
