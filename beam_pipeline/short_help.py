"""``--help``: our options on two screens, built from their declarations.

Every option class of this package (any ``PipelineOptions`` subclass not from Beam) is
asked to declare its options on a scratch parser; its argument groups become the sections,
options added straight to the parser go under the class's ``help_group`` (or a title made
from its name). So an option someone adds shows up here without touching this module.
Beam's hundreds of options stay behind ``--help-beam``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import textwrap

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.common.beam_internals import add_option_arguments

NAME_WIDTH = 28
MAX_WIDTH = 100
MAX_LINES = 100  # two screens
EXAMPLES = (
    ("An archive folder to CSV (+ errors, skips, summary and scan.report.html)",
     "{prog} /data/archive -o scan.csv"),
    ("A public bucket to typed Parquet next to the CSV",
     "{prog} gs://bucket/ct/ -o scan.csv --format csv,parquet --anonymous-access"),
    ("Nightly: only new or changed files, on a Flink cluster",
     "{prog} /data/archive -o scan.csv --incremental --config run_configs/flink.yaml"),
)


def own_option_classes() -> list[type]:
    """Our option classes, ``beam_pipeline``'s first, in the order they were defined."""
    classes = [cls for cls in PipelineOptions.__subclasses__()
               if cls.__module__.split(".")[0] != "apache_beam"]
    return sorted(classes, key=lambda cls: not cls.__module__.startswith("beam_pipeline"))


def _default_title(cls: type) -> str:
    title = getattr(cls, "help_group", None)
    if title:
        return title
    words = re.findall(r"[A-Z][a-z0-9]*", cls.__name__.removesuffix("Options")) or [cls.__name__]
    return " ".join(words).capitalize()


def option_groups(parser_groups=()) -> list[tuple[str, list[argparse.Action]]]:
    """``(title, actions)`` for ``parser_groups`` (the CLI's own) and every option class."""
    groups: dict[str, list[argparse.Action]] = {}
    for title, actions in parser_groups:
        groups.setdefault(title, []).extend(actions)
    for cls in own_option_classes():
        scratch = argparse.ArgumentParser(add_help=False)
        add_option_arguments(cls, scratch)
        # pylint: disable=protected-access
        defaults = (scratch._positionals, scratch._optionals)
        # Named groups first, then what was added straight to the parser.
        ordered = [group for group in scratch._action_groups if group not in defaults]
        for group in ordered + list(defaults):
            title = _default_title(cls) if group in defaults else group.title
            actions = [action for action in group._group_actions
                       if action.help is not argparse.SUPPRESS]
            if actions:
                groups.setdefault(title, []).extend(actions)
    return list(groups.items())


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    # One spelling each: "-o", and the dashed long form over its underscore alias.
    short = [name for name in action.option_strings if not name.startswith("--")]
    long = [name for name in action.option_strings if name.startswith("--")]
    dashed = [name for name in long if "_" not in name] or long
    names = ", ".join(short + dashed[:1])
    if action.nargs == 0:
        return names
    return f"{names} {action.metavar or _metavar(action)}"


def _metavar(action: argparse.Action) -> str:
    type_name = getattr(action.type, "__name__", "")
    if "integer" in type_name or action.type is int:
        return "N"
    for word, metavar in (("file", "FILE"), ("path", "PATH"), ("dir", "DIR")):
        if action.dest.endswith(word):
            return metavar
    return "LIST" if "list" in type_name else "VALUE"


def _first_sentence(help_text: str) -> str:
    help_text = " ".join((help_text or "").split())
    match = re.search(r"(?<=\.)\s+(?=[A-Z0-9-])", help_text)
    return help_text[: match.start()] if match else help_text


def _explanation(action: argparse.Action) -> str:
    line = _first_sentence(action.help or "")
    default = action.default
    if action.nargs != 0 and default not in (None, "", False, argparse.SUPPRESS) \
            and "default" not in line:
        line = f"{line.rstrip('.')} [default: {default}]"
    return line


def _wrap(text: str, width: int, indent: str, max_lines: int) -> list[str]:
    lines = textwrap.wrap(text, width, initial_indent=indent.ljust(NAME_WIDTH),
                          subsequent_indent=" " * NAME_WIDTH)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return lines or [indent]


def format_help(prog: str, usage: str, description: str, parser_groups=()) -> str:
    """The help; each option's explanation takes at most two lines, or one if two would
    not fit in ``MAX_LINES``."""
    width = min(MAX_WIDTH, max(60, shutil.get_terminal_size((80, 24)).columns))
    text = _format(prog, usage, description, parser_groups, width, 2)
    if text.count("\n") > MAX_LINES:
        text = _format(prog, usage, description, parser_groups, width, 1)
    return text


def _format(prog, usage, description, parser_groups, width: int, lines_per_option: int) -> str:
    lines = [f"usage: {usage}", ""]
    lines += textwrap.wrap(description, width) + [""]
    for title, actions in option_groups(parser_groups):
        lines.append(f"{title}:")
        for action in actions:
            names = f"  {_names(action)}"
            explanation = _explanation(action)
            if len(names) >= NAME_WIDTH - 1:
                lines.append(names)
                names = ""
            lines += _wrap(explanation, width, names, lines_per_option)
        lines.append("")
    lines.append("Examples:")
    for comment, command in EXAMPLES:
        lines.append(f"  # {comment}")
        wrapped = textwrap.wrap(command.format(prog=prog), width - 2, initial_indent="  ",
                                subsequent_indent="      ", break_on_hyphens=False)
        lines += [line + " \\" for line in wrapped[:-1]] + wrapped[-1:]
    lines.append("")
    lines += textwrap.wrap(f"Beam's pipeline options (runner, Flink, Dataflow, workers ...) are "
                           f"accepted too; {prog} --help-beam lists them, with our options' "
                           "full texts.", width)
    return "\n".join(lines) + "\n"
