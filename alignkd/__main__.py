import sys

from .cli import main

if __name__ == "__main__":  # a spawned worker (the book's parallel chapters) imports this module too
    sys.exit(main())
