"""`python -m xl2nn ...`: the same as the `xl2nn` command (and what `torchrun -m xl2nn` runs)."""
from .cli import run

if __name__ == "__main__":
    run()
