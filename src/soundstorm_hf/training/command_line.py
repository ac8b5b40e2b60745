"""One spelling of the training commands' flags: dashes (`--max-steps`), as in the rest of `soundstorm-hf`. The
underscored spelling of the scripts' first versions (`--max_steps`) is still accepted, but not listed in `--help`."""

from __future__ import annotations

import argparse
import copy


class DashedHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Lists each flag by its dashed spellings only, with its default."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        dashed = [option for option in action.option_strings if "_" not in option.lstrip("-")]
        if dashed and len(dashed) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = dashed
        return super()._format_action_invocation(action)


def prefer_dashes(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Puts each flag's dashed spelling first (usage lines and errors name it) and lists only that one in `--help`."""
    for action in parser._actions:
        action.option_strings.sort(key=lambda option: "_" in option)
    parser.formatter_class = DashedHelpFormatter
    return parser


def dashed(name: str) -> tuple[str, str] | tuple[str]:
    """`--max-steps` and `--max_steps` for `name` 'max_steps' (add_argument's option strings)."""
    spellings = (f"--{name.replace('_', '-')}", f"--{name}")
    return spellings if "_" in name else spellings[:1]
