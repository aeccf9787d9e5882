"""Entry point for ``python -m benchmarks.mtl``."""

from benchmarks.mtl.run import main

if __name__ == "__main__":
    main()
