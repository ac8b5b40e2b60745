"""`soundstorm-hf finetune` from a source checkout (also under `accelerate launch`); the code is soundstorm_hf.training.finetune."""

import sys

from soundstorm_hf.training.finetune import cli

if __name__ == "__main__":
    cli(sys.argv[1:])
