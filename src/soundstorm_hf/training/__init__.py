"""Training SoundStorm: tokenize audio datasets (`prepare`), train with Accelerate (`train`) and fine-tune on one
voice (`finetune`). Each module has a `cli(argv, prog)`, which `soundstorm-hf prepare|train|finetune` and the thin
entry points in the repository's `training/` call; importing this package loads nothing heavy."""
