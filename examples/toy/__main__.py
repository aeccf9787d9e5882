"""Entry point for ``python -m examples.toy``."""

from examples.toy.demo import main

if __name__ == "__main__":
    main()
