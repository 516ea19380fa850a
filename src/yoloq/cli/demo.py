"""`yoloq demo`: the workflow, end to end, on built-in data."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the whole workflow on built-in data")
    parser.set_defaults(func=run)


def run(args) -> int:
    from yoloq.demo import run_demo

    run_demo()
    return 0
