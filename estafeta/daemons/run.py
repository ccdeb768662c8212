"""Entry point of every service process: `python -m estafeta.daemons.run ...`."""
from .skeleton import main

if __name__ == "__main__":
    main()
