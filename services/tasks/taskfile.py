"""ACR Tasks' multi-step task file (`acr-task.yaml`), parsed and checked before anything runs (pure).

    version: v1.1.0
    stepTimeout: 600                  # seconds, each step's default
    env: [A=1]                        # every step's environment
    secrets: [{id: token}]            # values given with the run (isSecret), masked in the log
    volumes: [{name: v, secret: {file.txt: <base64>}}]   # mounted read-only where a cmd step says
    steps:
      - id: build-web                 # default acb_step_<n>
        build: -t $Registry/web:{{.Run.ID}} -f web/Dockerfile web
        when: ["-"]                   # "-": start at once; ids: after those; none: after the previous step
      - id: build-api
        build: -t $Registry/api:{{.Run.ID}} api
        when: ["-"]
      - id: test
        cmd: $Registry/web:{{.Run.ID}} ./self-test
        when: [build-web, build-api]
        env: [MODE=ci]
        volumeMounts: [{name: v, mountPath: /run/config}]
        workingDirectory: /workspace
        timeout: 120
        retries: 1
        retryDelay: 2
      - push: [$Registry/web:{{.Run.ID}}, $Registry/api:{{.Run.ID}}]

The run variables are substituted in the text first (services/tasks/variables.py), as ACR does. Every error
is a `TaskFileInvalid` that names the line (1-based) of the offending node: unknown keys, wrong types, a step
that is none or several of build/push/cmd, duplicate or unknown ids in `when`, dependency cycles.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_STEPS = 64
MAX_TASK_FILE_BYTES = 256 * 1024
DEFAULT_STEP_TIMEOUT = 600
_TOP_KEYS = {
    "version",
    "stepTimeout",
    "totalTimeout",
    "env",
    "secrets",
    "volumes",
    "steps",
    "alias",
    "workingDirectory",
}
_STEP_KEYS = {
    "id",
    "build",
    "push",
    "cmd",
    "when",
    "env",
    "workingDirectory",
    "timeout",
    "retries",
    "retryDelay",
    "detach",
    "startDelay",
    "entryPoint",
    "user",
    "network",
    "volumeMounts",
    "keep",
    "ignoreErrors",
    "disableWorkingDirectoryOverride",
    "pull",
    "cache",
}


class TaskFileInvalid(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class BuildArgs:
    images: list[str]
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: list[str] = field(default_factory=list)
    target: str | None = None
    no_cache: bool = False


@dataclass(frozen=True)
class VolumeMount:
    name: str
    path: str
    line: int


@dataclass
class Step:
    id: str
    line: int
    kind: str  # build | push | cmd
    build: BuildArgs | None = None
    push: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)  # image, then its arguments
    when: list[str] = field(default_factory=list)  # ids; empty: start at once
    env: list[str] = field(default_factory=list)
    working_directory: str | None = None
    timeout: int = DEFAULT_STEP_TIMEOUT
    retries: int = 0
    retry_delay: int = 5
    detach: bool = False
    start_delay: int = 0
    entry_point: str | None = None
    user: str | None = None
    network: str | None = None
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    ignore_errors: bool = False
    when_line: int = 0  # the line of `when:` (the step's own when there is none)


@dataclass(frozen=True)
class TaskFile:
    version: str
    steps: list[Step]
    env: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # ids
    volumes: dict[str, dict[str, bytes]] = field(default_factory=dict)  # name -> file name -> content


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: Node, what: str) -> str:
    if not isinstance(node, ScalarNode):
        raise TaskFileInvalid(_line(node), f"{what} must be a value")
    return str(node.value)


def _int(node: Node, what: str, low: int, high: int) -> int:
    text = _scalar(node, what)
    try:
        value = int(text)
    except ValueError as error:
        raise TaskFileInvalid(_line(node), f"{what} must be a whole number, not {text[:40]!r}") from error
    if not low <= value <= high:
        raise TaskFileInvalid(_line(node), f"{what} must be between {low} and {high}")
    return value


def _bool(node: Node, what: str) -> bool:
    text = _scalar(node, what).lower()
    if text not in ("true", "false"):
        raise TaskFileInvalid(_line(node), f"{what} must be true or false")
    return text == "true"


def _strings(node: Node, what: str) -> list[str]:
    if isinstance(node, ScalarNode):
        return [str(node.value)]
    if not isinstance(node, SequenceNode):
        raise TaskFileInvalid(_line(node), f"{what} must be a list")
    return [_scalar(item, what) for item in node.value]


def _env(node: Node) -> list[str]:
    values = _strings(node, "env")
    for value in values:
        if "=" not in value or not value.split("=", 1)[0]:
            raise TaskFileInvalid(_line(node), f"env entries are NAME=value, not {value[:40]!r}")
    return values


def _mapping(node: Node, what: str) -> list[tuple[ScalarNode, Node]]:
    if not isinstance(node, MappingNode):
        raise TaskFileInvalid(_line(node), f"{what} must be a mapping")
    pairs: list[tuple[ScalarNode, Node]] = []
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            raise TaskFileInvalid(_line(key), "keys must be names")
        pairs.append((key, value))
    return pairs


def parse_build(text: str, line: int) -> BuildArgs:
    """`build:` as `docker build` arguments: -t/--image, -f/--file, --build-arg, --target, --no-cache, context."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise TaskFileInvalid(line, f"build: {error}") from error
    images: list[str] = []
    dockerfile, target, no_cache = "Dockerfile", None, False
    build_args: list[str] = []
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        name, _, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        takes_value = name in ("-t", "--tag", "--image", "-f", "--file", "--build-arg", "--target")
        if takes_value:
            value = inline if inline else (words[index + 1] if index + 1 < len(words) else None)
            if value is None:
                raise TaskFileInvalid(line, f"build: {name} needs a value")
            index += 1 if inline else 2
            if name in ("-t", "--tag", "--image"):
                images.append(value)
            elif name in ("-f", "--file"):
                dockerfile = value
            elif name == "--build-arg":
                build_args.append(value)
            else:
                target = value
            continue
        if word == "--no-cache":
            no_cache = True
        elif word == "--pull":
            pass
        elif word.startswith("-"):
            raise TaskFileInvalid(line, f"build: unsupported option {word[:40]!r}")
        else:
            positional.append(word)
        index += 1
    if len(positional) > 1:
        raise TaskFileInvalid(line, f"build: one context directory, not {len(positional)}")
    context = positional[0] if positional else "."
    for path in (context, dockerfile):
        if path.startswith("/") or ".." in path.split("/"):
            raise TaskFileInvalid(line, f"build: {path!r} must be inside the context")
    if context.startswith(("http://", "https://", "git@")):
        raise TaskFileInvalid(line, "build: remote contexts are not supported")
    return BuildArgs(images, dockerfile, context, build_args, target, no_cache)


def _step(node: Node, index: int, default_timeout: int) -> Step:
    values: dict[str, Any] = {}
    kinds: list[str] = []
    line = _line(node)
    for key, value in _mapping(node, "a step"):
        name = str(key.value)
        if name not in _STEP_KEYS:
            raise TaskFileInvalid(_line(key), f"unknown step property {name[:40]!r}")
        if name in ("build", "push", "cmd"):
            kinds.append(name)
        if name == "id":
            values["id"] = _scalar(value, "id")
        elif name == "build":
            values["build"] = parse_build(_scalar(value, "build"), _line(value))
        elif name == "push":
            values["push"] = _strings(value, "push")
        elif name == "cmd":
            try:
                values["cmd"] = shlex.split(_scalar(value, "cmd"))
            except ValueError as error:
                raise TaskFileInvalid(_line(value), f"cmd: {error}") from error
            if not values["cmd"]:
                raise TaskFileInvalid(_line(value), "cmd names no image")
        elif name == "when":
            values["when"] = (_strings(value, "when"), _line(value))
        elif name == "env":
            values["env"] = _env(value)
        elif name == "workingDirectory":
            values["working_directory"] = _scalar(value, name)
        elif name == "timeout":
            values["timeout"] = _int(value, name, 1, 8 * 3600)
        elif name == "retries":
            values["retries"] = _int(value, name, 0, 10)
        elif name == "retryDelay":
            values["retry_delay"] = _int(value, name, 0, 3600)
        elif name == "startDelay":
            values["start_delay"] = _int(value, name, 0, 3600)
        elif name in ("detach", "keep", "ignoreErrors", "disableWorkingDirectoryOverride", "pull"):
            flag = _bool(value, name)
            if name == "detach":
                values["detach"] = flag
            elif name == "ignoreErrors":
                values["ignore_errors"] = flag
        elif name == "entryPoint":
            values["entry_point"] = _scalar(value, name)
        elif name == "user":
            values["user"] = _scalar(value, name)
        elif name == "network":
            values["network"] = _scalar(value, name)
        elif name == "volumeMounts":
            values["volume_mounts"] = _volume_mounts(value)
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        raise TaskFileInvalid(line, f"a step is exactly one of build, push or cmd (this one is {what})")
    kind = kinds[0]
    if values.get("detach") and kind != "cmd":
        raise TaskFileInvalid(line, "only a cmd step can detach")
    if values.get("volume_mounts") and kind != "cmd":
        raise TaskFileInvalid(line, "only a cmd step mounts volumes")
    # `when` is resolved once every step is read (it needs the previous one): "<previous>" until then
    when, when_line = values.pop("when", (["<previous>"], line))
    step_id = values.pop("id", f"acb_step_{index}")
    timeout = values.pop("timeout", default_timeout)
    return Step(id=step_id, line=line, kind=kind, timeout=timeout, when=when, when_line=when_line, **values)


def _volume_mounts(node: Node) -> list[VolumeMount]:
    """`volumeMounts: [{name: v, mountPath: /abs/path}]`: absolute, normalised, not `/`, not the context."""
    if not isinstance(node, SequenceNode):
        raise TaskFileInvalid(_line(node), "volumeMounts must be a list")
    mounts: list[VolumeMount] = []
    for item in node.value:
        fields = {str(k.value): v for k, v in _mapping(item, "a volume mount")}
        if set(fields) != {"name", "mountPath"}:
            raise TaskFileInvalid(_line(item), "a volume mount has a name and a mountPath")
        path = _scalar(fields["mountPath"], "mountPath")
        normal = posixpath.normpath(path)
        if not path.startswith("/") or ".." in path.split("/") or normal in ("/", "/workspace") or ":" in path:
            raise TaskFileInvalid(_line(item), f"mountPath {path[:60]!r}: an absolute path, not / nor /workspace")
        if normal in {m.path for m in mounts}:
            raise TaskFileInvalid(_line(item), f"mountPath {path[:60]!r} is mounted twice")
        mounts.append(VolumeMount(_scalar(fields["name"], "name"), normal, _line(item)))
    return mounts


def _volume(item: Node) -> tuple[str, dict[str, bytes]]:
    """`{name: v, secret: {file name: base64 content}}`."""
    fields = {str(k.value): v for k, v in _mapping(item, "a volume")}
    if set(fields) != {"name", "secret"}:
        raise TaskFileInvalid(_line(item), "a volume has a name and a secret")
    files: dict[str, bytes] = {}
    for key, value in _mapping(fields["secret"], "secret"):
        file_name = str(key.value)
        if not file_name or "/" in file_name or file_name in (".", ".."):
            raise TaskFileInvalid(_line(key), f"a volume file is a plain name, not {file_name[:40]!r}")
        try:
            files[file_name] = base64.b64decode(_scalar(value, "a volume file"), validate=True)
        except binascii.Error as error:
            raise TaskFileInvalid(_line(value), f"volume file {file_name[:40]!r} is not base64") from error
    return _scalar(fields["name"], "name"), files


def parse_task_file(text: str) -> TaskFile:
    """The task file, checked whole; TaskFileInvalid naming the line otherwise."""
    if len(text.encode()) > MAX_TASK_FILE_BYTES:
        raise TaskFileInvalid(1, f"the task file is larger than {MAX_TASK_FILE_BYTES} bytes")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise TaskFileInvalid((mark.line + 1) if mark else 1, f"not YAML: {error.problem}") from error
    except yaml.YAMLError as error:
        raise TaskFileInvalid(1, f"not YAML: {error}") from error
    if root is None:
        raise TaskFileInvalid(1, "the task file is empty")
    version, env, secrets = "v1.0.0", [], []
    volumes: dict[str, dict[str, bytes]] = {}
    step_timeout = DEFAULT_STEP_TIMEOUT
    steps_node: Node | None = None
    for key, value in _mapping(root, "the task file"):
        name = str(key.value)
        if name not in _TOP_KEYS:
            raise TaskFileInvalid(_line(key), f"unknown property {name[:40]!r}")
        if name == "version":
            version = _scalar(value, name)
            if not version.startswith("v1."):
                raise TaskFileInvalid(_line(value), f"unsupported version {version[:20]!r} (v1.x)")
        elif name == "stepTimeout":
            step_timeout = _int(value, name, 1, 8 * 3600)
        elif name == "env":
            env = _env(value)
        elif name == "secrets":
            if not isinstance(value, SequenceNode):
                raise TaskFileInvalid(_line(value), "secrets must be a list")
            for item in value.value:
                fields = dict((str(k.value), v) for k, v in _mapping(item, "a secret"))
                if "id" not in fields:
                    raise TaskFileInvalid(_line(item), "a secret needs an id")
                if set(fields) - {"id", "keyvault", "clientID"}:
                    raise TaskFileInvalid(_line(item), "a secret has id, keyvault and clientID only")
                if "keyvault" in fields:
                    raise TaskFileInvalid(_line(item), "Key Vault secrets are not supported yet: pass it as a value")
                secrets.append(_scalar(fields["id"], "id"))
        elif name == "volumes":
            if not isinstance(value, SequenceNode):
                raise TaskFileInvalid(_line(value), "volumes must be a list")
            for item in value.value:
                volume_name, files = _volume(item)
                if volume_name in volumes:
                    raise TaskFileInvalid(_line(item), f"volume {volume_name[:40]!r} is declared twice")
                volumes[volume_name] = files
        elif name == "steps":
            steps_node = value
    if steps_node is None:
        raise TaskFileInvalid(1, "the task file has no steps")
    if not isinstance(steps_node, SequenceNode) or not steps_node.value:
        raise TaskFileInvalid(_line(steps_node), "steps must be a non-empty list")
    if len(steps_node.value) > MAX_STEPS:
        raise TaskFileInvalid(_line(steps_node), f"at most {MAX_STEPS} steps")
    steps = [_step(node, index, step_timeout) for index, node in enumerate(steps_node.value)]
    for step in steps:
        for mount in step.volume_mounts:
            if mount.name not in volumes:
                raise TaskFileInvalid(mount.line, f"volume {mount.name[:40]!r} is not declared in volumes")
    _resolve_when(steps)
    return TaskFile(version, steps, env, secrets, volumes)


def _resolve_when(steps: list[Step]) -> None:
    seen: dict[str, Step] = {}
    for index, step in enumerate(steps):
        line = step.when_line
        if step.id in seen:
            raise TaskFileInvalid(step.line, f"duplicate step id {step.id!r}")
        if step.when == ["<previous>"]:
            resolved = [steps[index - 1].id] if index else []
        elif step.when == ["-"]:
            resolved = []
        else:
            if "-" in step.when:
                raise TaskFileInvalid(line, "when: '-' stands alone")
            for dependency in step.when:
                if dependency not in seen:
                    known = dependency in {s.id for s in steps}
                    why = "a later step (a step waits only on earlier ones)" if known else "no such step"
                    raise TaskFileInvalid(line, f"when: {dependency!r} is {why}")
            resolved = list(step.when)
        step.when = resolved
        seen[step.id] = step
