"""Every setting as a Markdown table, from the declarations (the README embeds its output)."""

from dataclasses import fields

from . import SAUConfig
from .cli import DISPLAY_OPTIONS
from .schema import BACKDOORBENCH, METHOD, PLUGIN, plain, setting_of

_WHERE = {BACKDOORBENCH: "BackdoorBench flag", PLUGIN: "plugin flag"}


def settings_table() -> str:
    rows = ["| key | where | kind | changes results | default | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for f in fields(SAUConfig):
        s = setting_of(f)
        flag = " / ".join(f"`{n}`" for n in (*s.short, f"--{f.name}")) if s.source in _WHERE else "YAML only"
        where = f"{_WHERE[s.source]} {flag}" if s.source in _WHERE else flag
        rows.append(f"| `{f.name}` | {where} | {'method' if s.kind == METHOD else 'run'} | "
                    f"{'yes' if s.affects else 'no'} | `{plain(f.default)}` | {s.help.replace('|', '/')} |")
    for flag, kwargs in DISPLAY_OPTIONS.items():
        rows.append(f"| - | plugin flag `{flag}` | display | no | `{kwargs.get('default', False)}` | "
                    f"{kwargs['help']} |")
    return "\n".join(rows) + "\n"
