"""`soundstorm-hf train` from a source checkout (also under `accelerate launch`); the code is soundstorm_hf.training.train."""

import sys

from soundstorm_hf.training.train import cli

if __name__ == "__main__":
    cli(sys.argv[1:])
