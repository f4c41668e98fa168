"""Every command README.md and bench_scripts/README.md show is checked against the real thing.

Shell blocks (```bash) are cut into commands (``\\`` continuations joined, ``&&`` split) and
each is dispatched on its first words: ``sau-plugin`` / ``python -m sau_plugin`` commands are
parsed by the package's own argparse parser (an unknown flag or a bad choice fails),
``install-into`` and the launcher it writes run against a fake BackdoorBench root, ``pip``
pins and extras are compared with ``.ci/run`` and ``setup.cfg``, ``bench_scripts/*.py`` are
parsed by the script's own parser and ``bench_scripts/*.sh`` run with ``--dry-run``. A command
with no case here fails, so a new kind of command in a README needs a new check. Python
blocks are compiled, and the API example runs on a tiny synthetic backdoored model.
Commands shown inline (`sau-plugin ...`) have their flag names checked; backticked
repository paths must exist; the READMEs hold no diary text.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import importlib.util
import inspect
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import sau_plugin.cli as cli
from sau_plugin import SAUConfig, SAUError

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BENCH_README = REPO / "bench_scripts" / "README.md"
DOCS = (README, BENCH_README)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(doc: Path, lang: str) -> List[Tuple[str, str]]:
    """(id, body) of each fenced block of ``lang`` in ``doc``; the id names the file and line."""
    text = doc.read_text(encoding="utf-8")
    return [(f"{doc.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def shell_commands(body: str) -> Iterator[List[str]]:
    for line in body.replace("\\\n", " ").splitlines():
        words: List[str] = []
        for token in shlex.split(line, comments=True):
            if token == "&&":
                yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


def prose(doc: Path) -> str:
    """The document without its fenced blocks."""
    return FENCE.sub("", doc.read_text(encoding="utf-8"))


def inline_code(doc: Path) -> List[str]:
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(doc))]


SHELL_BLOCKS = [b for doc in DOCS for b in blocks(doc, "bash")]
PYTHON_BLOCKS = [b for doc in DOCS for b in blocks(doc, "python")]


# --- the package's command line ----------------------------------------------------------------

def subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser([command])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[command]


def option_strings(parser: argparse.ArgumentParser) -> Set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def parse_cli(args: List[str], cwd: Path = REPO) -> argparse.Namespace:
    """Parse (never run) ``sau-plugin ARGS`` with the real parser; a refusal fails with argparse's line.
    For ``defend`` the values also go through SAUConfig's validation, over the YAML the command names
    (relative to ``cwd``) or the shipped ``config.yaml``, as the command would merge them."""
    assert args and args[0] in cli.COMMANDS, f"`sau-plugin {' '.join(args)}`: not one of {sorted(cli.COMMANDS)}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = cli.build_parser(args).parse_args(args)
    except SystemExit:
        pytest.fail(f"`sau-plugin {' '.join(args)}` is refused by the real parser: {err.getvalue().strip()}")
    assert getattr(ns, "func", None) is not None, f"`sau-plugin {' '.join(args)}` selects no command"
    if args[0] == "defend":
        known = {f.name for f in dataclasses.fields(SAUConfig)}
        values = {k: v for k, v in vars(ns).items() if k in known and v is not None}
        if "epochs" in values:  # the command's rule: an explicit --epochs sets n_rounds unless given
            values.setdefault("n_rounds", values["epochs"])
        yaml_path = cwd / ns.yaml_path if ns.yaml_path else REPO / "defense_configs" / "sau" / "config.yaml"
        assert yaml_path.is_file(), f"`sau-plugin {' '.join(args)}`: no YAML at {yaml_path}"
        try:
            SAUConfig.from_yaml(yaml_path, values)
        except SAUError as exc:
            pytest.fail(f"`sau-plugin {' '.join(args)}` is refused by the configuration: {exc}")
    return ns


def sau_plugin_args(words: List[str]):
    if words[0] == "sau-plugin":
        return words[1:]
    if words[:3] == ["python", "-m", "sau_plugin"]:
        return words[3:]
    return None


# --- bench_scripts ---------------------------------------------------------------------------

class _Parsed(Exception):
    pass


def parse_script(script: Path, args: List[str], monkeypatch) -> argparse.Namespace:
    """Parse ``python SCRIPT ARGS`` with the script's own parser without running the script:
    its ``build_parser()`` when it has one, else its ``main`` stopped right after parse_args."""
    name = f"_readme_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            if hasattr(module, "build_parser"):
                return module.build_parser().parse_args(args)
            original = argparse.ArgumentParser.parse_args

            def stop_after_parsing(self, args=None, namespace=None):
                raise _Parsed(original(self, args, namespace))

            monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop_after_parsing)
            monkeypatch.setattr(sys, "argv", [str(script), *args])
            if inspect.signature(module.main).parameters:
                module.main(list(args))
            else:
                module.main()
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit:
        pytest.fail(f"`python {script.relative_to(REPO)} {' '.join(args)}` is refused by its parser: "
                    f"{err.getvalue().strip()}")
    pytest.fail(f"{script.relative_to(REPO)}: main() returned without parsing its arguments")


def dry_run(script: Path, args: List[str], cwd: Path) -> None:
    args = args if "--dry-run" in args else [*args, "--dry-run"]
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"`{script.relative_to(REPO)} {' '.join(args)}`: exit {proc.returncode}\n{proc.stderr}"


def torchrun_parser() -> argparse.ArgumentParser:
    from torch.distributed.run import get_args_parser

    return get_args_parser()


def check_torchrun(args: List[str], cwd: Path, monkeypatch) -> None:
    """``torchrun [its flags] -m sau_plugin ARGS`` or ``torchrun [its flags] ./defense/sau_plugin.py ARGS``:
    torchrun's own parser, then the plugin's (through the launcher for the second form)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = torchrun_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`torchrun {' '.join(args)}` is refused by torchrun's parser: {err.getvalue().strip()}")
    if ns.module:
        assert ns.training_script == "sau_plugin", f"`torchrun {' '.join(args)}`: runs another module"
        parse_cli(ns.training_script_args, cwd)
    else:
        assert ns.training_script == "./defense/sau_plugin.py", f"`torchrun {' '.join(args)}`: no check for this script"
        parse_cli(run_launcher(cwd / "defense" / "sau_plugin.py", ns.training_script_args, monkeypatch), cwd)


# --- install and CI ------------------------------------------------------------------------

def ci_pytest_args() -> List[str]:
    """The pytest arguments of .ci/run's first part (today's stack), the README's test command."""
    m = re.search(r'^run_pytest "today\'s stack" (.*)$', (REPO / ".ci" / "run").read_text(encoding="utf-8"), re.M)
    assert m, ".ci/run no longer runs pytest as `run_pytest \"today's stack\" ...`; update this test"
    return shlex.split(m.group(1))


def ci_torch_pin() -> str:
    m = re.search(r'install --quiet "(torch==[^"]+)"', (REPO / ".ci" / "run").read_text(encoding="utf-8"))
    assert m
    return m.group(1)


def extras() -> Set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return set(cfg["options.extras_require"])


def registered_markers() -> Set[str]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return set(re.findall(r'^\s*"(\w+):', text, re.M))


def check_pip(words: List[str]) -> None:
    rest = words[2:]
    assert words[:2] == ["pip", "install"] and rest, words
    while rest:
        word = rest.pop(0)
        if word.startswith("torch"):
            assert word == ci_torch_pin(), f"README pins {word}, CI installs {ci_torch_pin()}"
        elif word == "-e":
            target = rest.pop(0)
            m = re.fullmatch(r"\.(?:\[(.*)\])?", target)
            if m:  # the repository itself, with extras
                unknown = set(filter(None, (m.group(1) or "").split(","))) - extras()
                assert not unknown, f"`pip install -e {target}`: no extra {sorted(unknown)} in setup.cfg"
            else:
                assert Path(target).name == "sau_plugin", f"`pip install -e {target}`: expected a sau_plugin checkout"
        else:
            pytest.fail(f"`{' '.join(words)}`: no check for {word!r} in tests/project/test_readme.py")


def check_pytest(words: List[str]) -> None:
    options = words[3:]
    assert "tests" in options, words
    if "-m" in options:
        expr = options[options.index("-m") + 1]
        names = set(re.findall(r"\w+", expr)) - {"not", "and", "or"}
        assert names <= registered_markers(), f"`{' '.join(words)}`: unregistered marker(s) {names}"


def check_ray_start(words: List[str]) -> None:
    """`ray start ...`: parsed (never run) by Ray's own command line; skipped where Ray is not installed."""
    scripts = pytest.importorskip("ray.scripts.scripts")
    try:
        scripts.start.make_context("ray start", list(words[2:]))
    except Exception as exc:  # noqa: BLE001 - click's usage errors
        pytest.fail(f"`{' '.join(words)}` is refused by Ray's parser: {exc}")


def fake_backdoorbench(root: Path) -> Path:
    (root / "defense").mkdir(parents=True, exist_ok=True)
    (root / "utils").mkdir(exist_ok=True)
    (root / "utils" / "save_load_attack.py").write_text("")
    return root


def run_launcher(launcher: Path, args: List[str], monkeypatch) -> List[str]:
    """Run the launcher install-into wrote, with os.execv replaced by a recorder: the sau_plugin argv it execs."""
    assert launcher.is_file(), f"{launcher} does not exist: `sau-plugin install-into` should have written it"
    seen: List[List[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: seen.append(list(argv)))
    monkeypatch.setattr(sys, "argv", [str(launcher), *args])
    runpy.run_path(str(launcher), run_name="__main__")
    assert len(seen) == 1 and seen[0][1:3] == ["-m", "sau_plugin"], seen
    return seen[0][3:]


# --- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b[0] for b in SHELL_BLOCKS])
def test_every_shell_command_is_checked_against_the_real_tool(block, tmp_path, monkeypatch):
    _, body = block
    cwd = REPO
    commands = list(shell_commands(body))
    assert commands
    for words in commands:
        while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value prefixes
            words = words[1:]
        args = sau_plugin_args(words)
        if args is not None and args[:1] == ["install-into"]:
            parse_cli(args)
            monkeypatch.chdir(cwd)
            assert cli.main(args) == 0
            assert (cwd / "defense" / "sau_plugin.py").is_file()
        elif args is not None:
            parse_cli(args, cwd)
        elif words[0] == "pip":
            check_pip(words)
        elif words[0] == "cd":
            target = words[1]
            cwd = fake_backdoorbench(tmp_path / "BackdoorBench") if target.endswith("/BackdoorBench") else REPO / target
            assert cwd.is_dir(), f"`cd {target}`: no such folder"
        elif words[:2] == ["python", "./defense/sau_plugin.py"]:
            argv = run_launcher(cwd / "defense" / "sau_plugin.py", words[2:], monkeypatch)
            parse_cli(argv, cwd)
        elif words[:3] == ["python", "-m", "pytest"]:
            check_pytest(words)
        elif words[0] == "torchrun":
            check_torchrun(words[1:], cwd, monkeypatch)
        elif words[0] == "python" and words[1].startswith("bench_scripts/") and words[1].endswith(".py"):
            script = REPO / words[1]
            assert script.is_file(), f"{words[1]} does not exist"
            parse_script(script, words[2:], monkeypatch)
        elif words[:2] == ["ray", "start"]:
            check_ray_start(words)
        elif re.fullmatch(r"bench_scripts/\w+\.sh", words[1] if words[0] == "bash" else words[0]):
            words = words[1:] if words[0] == "bash" else words
            script = REPO / words[0]
            assert script.is_file(), f"{words[0]} does not exist"
            dry_run(script, words[1:], tmp_path)
        else:
            pytest.fail(f"no check for the README command `{' '.join(words)}`; add a case to tests/project/test_readme.py")


def test_the_two_commands_come_first_and_the_test_command_is_what_ci_runs():
    first, second = [list(shell_commands(body)) for _, body in blocks(README, "bash")[:2]]
    assert [w[0] for w in first] == ["pip", "pip", "sau-plugin"] and first[-1] == ["sau-plugin", "demo"]
    assert second == [["python", "-m", "pytest", *ci_pytest_args()]]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b[0] for b in PYTHON_BLOCKS])
def test_python_blocks_compile(block):
    compile(block[1], block[0], "exec")


def test_the_api_example_runs_on_a_tiny_backdoored_model():
    from tests.helpers.synthetic import backdoored_task

    (example,) = [body for _, body in blocks(README, "python") if "Unlearner(" in body and "DataParallel" not in body]
    model, (x_clean, y_clean), (x_test, y_test), (x_bd, y_bd, y_true) = backdoored_task(
        n_train=400, n_poison=40, epochs=1)
    ns: Dict[str, object] = dict(backdoored_model=model, x_clean=x_clean[:128], y_clean=y_clean[:128],
                                 x_test=x_test[:128], y_test=y_test[:128], x_bd=x_bd[:128], y_bd=y_bd[:128],
                                 y_true=y_true[:128])
    exec(compile(example, "README.md (Python API)", "exec"), ns)
    result, cfg = ns["result"], ns["cfg"]
    assert len(result.history) == cfg.n_rounds and {"test_acc", "test_asr", "test_ra"} <= set(ns["after"])
    assert ns["steps"] >= 1 and ns["x_adv"].shape == x_clean[:64].shape


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_commands_shown_inline_use_real_flags(doc):
    """`sau-plugin CMD [--flag X] ...` in the prose: the command exists and each flag is one of its options
    (usage notation such as `[--epochs N]` is allowed here); inline `pip install` and pytest commands get
    the same checks as in a shell block."""
    spans = inline_code(doc)
    for span in spans:
        if span.startswith(("pip install ", "python -m pytest ")):
            for words in shell_commands(span):
                (check_pip if words[0] == "pip" else check_pytest)(words)
    spans = [s for s in spans if sau_plugin_args(s.split()) is not None]
    assert doc != README or spans
    for span in spans:
        words = sau_plugin_args(span.split())
        assert words and words[0] in cli.COMMANDS, f"`{span}`: not a sau-plugin command"
        known = option_strings(subparser(words[0]))
        flags = {re.split(r"[=\]]", w.strip("["))[0] for w in words[1:] if w.strip("[").startswith("-")}
        assert flags <= known, f"`{span}`: {sorted(flags - known)} not options of `sau-plugin {words[0]}`"
        usage = re.search(r"[][{}<>|]|\.\.\.|--help|(?<![\w-])[A-Z]+\b", span)
        if not usage:  # a complete command: parsed as one from a shell block
            parse_cli(words)


def test_every_flag_the_readme_names_exists():
    known = option_strings(torchrun_parser())
    for command in cli.COMMANDS:
        known |= option_strings(subparser(command))
    code = re.findall(r"`([^`]+)`", prose(README)) + [body for _, body in blocks(README, "bash")]
    code = ["\n".join(line for line in c.splitlines() if not line.startswith("ray ")) for c in code]  # Ray's flags
    named = {f for c in code for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", c)}
    assert named
    assert named <= known, f"README names flags no command has: {sorted(named - known)}"


def expand_braces(path: str) -> List[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in expand_braces(path[:m.start()] + alt + path[m.end():])]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_repository_paths_the_readme_names_exist(doc):
    text = prose(doc)
    roots = ("sau_plugin/", "bench_scripts/", "defense_configs/", "tests/", ".ci/")
    named = [s for s in re.findall(r"`([^`\s]+)`", text) if s.startswith(roots) and "<" not in s]
    named += [t for t in re.findall(r"\]\(([^)#]+)\)", text) if not t.startswith("http")]
    assert doc != README or named
    base = REPO if doc == README else doc.parent
    for path in named:
        for p in expand_braces(path.split("::")[0]):
            hits = list(REPO.glob(p)) if p.startswith(roots) else list(base.glob(p))
            assert hits, f"{doc.name} names {path!r}, which is not in the repository"


DIARY = [r"SAU_SPEC", r"\bsessions?\b", r"\bthis (run|branch)\b", r"\ban earlier\b", r"\bat commit\b",
         r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", r"/work/"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_no_diary_text(doc):
    text = doc.read_text(encoding="utf-8")
    found = [m.group(0) for pattern in DIARY for m in re.finditer(pattern, text, re.I)]
    assert not found, f"{doc.name}: diary text or a file outside the repository: {found}"


def test_the_readmes_settings_table_is_the_generated_one():
    from sau_plugin.config.table import settings_table

    text = README.read_text()
    start, end = "<!-- settings:start -->\n", "<!-- settings:end -->"
    assert start in text and end in text
    embedded = text[text.index(start) + len(start): text.index(end)]
    assert embedded == settings_table(), "README's settings table is stale: paste `python -m sau_plugin.config` into it"
