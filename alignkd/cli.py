"""Command line: list chapters and their parameters, run one chapter with overrides, build the book.

    python -m alignkd list
    python -m alignkd params 02                       # a chapter's parameters, defaults and allowed values
    python -m alignkd run 02 --profile quick -p n_trials=5 -p betas='[0.5, 1.0]'
    python -m alignkd check --profile paper               # can this machine run a profile, and what will it cost?
    python -m alignkd book --profile default

Override values are YAML (`5`, `0.5`, `[0.5, 1.0]`, `ppo`). Before anything executes, every value is checked
against the chapter's parameters cell and against this machine (`alignkd.parameters.preflight`: a GPU,
bf16, model weights); a bad one exits with status 2 and a message naming the parameter and what it
allows or what would make it run, and writes nothing. `check` also prints chapter 06's predicted cost under the
profile (`alignkd.chapters.ch06_cost`: FLOPs, tokens and minutes per stage on a 2-core CPU, one H200 and 8 H100s), on any
machine and whether or not this one can run it: the budget is read before the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .parameters import PROFILES, ParameterError, PreflightError, chapters, find_chapter, preflight, profile_values


def _parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"override '{pair}' must look like name=value")
        try:
            overrides[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ParameterError(f"parameter '{name.strip()}' = {text!r}: not a YAML value "
                                 f"({getattr(error, 'problem', None) or error})") from None
    return overrides


def _cmd_list(args) -> None:
    for name, chapter in chapters().items():
        print(f"{name:<28} {chapter.title}")
        for parameter in chapter.parameters.values():
            print(f"    {parameter.name} = {parameter.default!r}  ({parameter.allowed()})")


def _cmd_params(args) -> None:
    chapter = find_chapter(args.chapter)
    profile = profile_values(args.profile).get(chapter.name) or {}
    print(f"{chapter.name}: {chapter.title}  [{chapter.path.relative_to(Path.cwd()) if chapter.path.is_relative_to(Path.cwd()) else chapter.path}]")
    for parameter in chapter.parameters.values():
        value = profile.get(parameter.name, parameter.default)
        where = f"params/{args.profile}.yaml" if parameter.name in profile else "default"
        text = f"  {parameter.name:<22} = {value!r:<24} ({where}; {parameter.allowed()})"
        if parameter.description:
            text += f"  {parameter.description}"
        print(text)


def _print_cost(profile: str) -> None:
    """Chapter 06's cost table under `profile` (meta-device shapes only: no weights are loaded)."""
    from .chapters import profile_values
    from .chapters.ch06_cost import CHAPTER, chapter_cost, format_table, machines

    params = profile_values(CHAPTER, profile)
    found = machines(workers=params["workers"])
    try:
        table = chapter_cost(params, found)
    except ValueError as error:  # a ground truth whose size the cost model does not know
        print(f"chapter 06 under profile '{profile}': no cost prediction ({error})")
        return
    print(format_table(table, profile, found))


def _cmd_check(args) -> None:
    try:
        checked = preflight(args.profile)
    except PreflightError:
        _print_cost(args.profile)  # what the profile would cost elsewhere, then the reasons it cannot run here
        raise
    print(f"profile '{args.profile}' can run on this machine ({len(checked)} chapters checked)")
    _print_cost(args.profile)


def _cmd_run(args) -> None:
    from .book import run_chapter

    output = run_chapter(args.chapter, args.profile, _parse_overrides(args.param), args.output)
    print(output)


def _cmd_book(args) -> None:
    from .book import build

    build(args.profile, force=args.force, jobs=args.jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignkd", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("list", help="chapters and their parameters").set_defaults(func=_cmd_list)

    params = commands.add_parser("params", help="one chapter's parameters and their values in a profile")
    params.add_argument("chapter", help="stem, number or name, e.g. 02, 02_mog_setup, mog_setup")
    params.add_argument("--profile", default="default", choices=PROFILES)
    params.set_defaults(func=_cmd_params)

    run = commands.add_parser("run", help="execute one chapter with a profile and overrides")
    run.add_argument("chapter")
    run.add_argument("--profile", default="default", choices=PROFILES)
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="override a parameter (YAML value); repeatable")
    run.add_argument("-o", "--output", type=Path, help="executed notebook path (default _build/runs/...)")
    run.set_defaults(func=_cmd_run)

    check = commands.add_parser("check", help="check a profile against every chapter and this machine and print "
                                             "chapter 06's predicted cost; runs nothing")
    check.add_argument("--profile", default="default", choices=PROFILES)
    check.set_defaults(func=_cmd_check)

    book = commands.add_parser("book", help="execute every chapter and render the HTML book")
    book.add_argument("--profile", default="default", choices=PROFILES)
    book.add_argument("--force", action="store_true", help="re-execute chapters even if unchanged")
    book.add_argument("--jobs", type=int, default=None, metavar="N",
                      help="chapters executed at once (default: one per core, or ALIGNKD_JOBS)")
    book.set_defaults(func=_cmd_book)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ParameterError as error:
        print(f"alignkd: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
