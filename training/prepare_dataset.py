"""`soundstorm-hf prepare` from a source checkout (also under `accelerate launch`); the code is soundstorm_hf.training.prepare."""

import sys

from soundstorm_hf.training.prepare import cli

if __name__ == "__main__":
    cli(sys.argv[1:])
