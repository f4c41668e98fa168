"""The ``defend`` flags are derived from SAUConfig's declarations; this pins them to the
hand-written parser they replaced (tests/data/defend_parser.json, recorded from it), so
deriving them changed no flag name, short alias, type, nargs, action, default or choice."""

import json
from pathlib import Path

from sau_plugin.cli import build_parser

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "defend_parser.json"
COMPARED = ("option_strings", "type", "nargs", "const", "default", "choices", "action")


def describe_defend_parser() -> dict:
    parser = build_parser(["defend"])
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["defend"]
    out = {}
    for a in sub._actions:
        if a.dest == "help":
            continue
        out[a.dest] = {"option_strings": a.option_strings, "nargs": a.nargs, "const": a.const, "default": a.default,
                       "type": getattr(a.type, "__name__", None) if a.type else None,
                       "choices": list(a.choices) if a.choices else None, "help": a.help,
                       "action": a.__class__.__name__}
    return out


def test_defend_flags_equal_the_recorded_parser():
    recorded, now = json.loads(SNAPSHOT.read_text()), describe_defend_parser()
    assert sorted(now) == sorted(recorded), (set(now) ^ set(recorded))
    for dest, want in recorded.items():
        got = {k: now[dest][k] for k in COMPARED}
        assert got == {k: want[k] for k in COMPARED}, dest


def test_every_defend_flag_says_what_it_does():
    undocumented = [dest for dest, a in describe_defend_parser().items() if not a["help"]]
    assert not undocumented, f"flags without help: {undocumented}"
