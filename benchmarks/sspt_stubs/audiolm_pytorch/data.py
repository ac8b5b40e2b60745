"""Placeholder for soundstorm-pytorch's trainer import (see ../README.md); the benchmark does not train with it."""


def get_dataloader(*args, **kwargs):
    raise NotImplementedError("placeholder: audiolm_pytorch is not installed in this benchmark environment")
