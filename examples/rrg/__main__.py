"""``python -m examples.rrg`` runs the demo (see :mod:`examples.rrg.demo`)."""

from examples.rrg.demo import main

if __name__ == "__main__":
    main()
