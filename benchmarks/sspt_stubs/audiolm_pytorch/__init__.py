"""Placeholder names for soundstorm-pytorch's imports (see ../README.md); nothing here is ever instantiated."""


class SoundStream:  # noqa: D101
    pass


class HubertWithKmeans:  # noqa: D101
    pass


class FairseqVQWav2Vec:  # noqa: D101
    pass
