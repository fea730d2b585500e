"""The pure rules of ACR Tasks: which build contexts are refused and why, the base images a Dockerfile pulls,
run variables, and the files `acr build` sends (.dockerignore)."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.cli.build_context import context_files, ignored, parse_dockerignore, write_context
from services.tasks.context import ContextInvalid, ContextLimits, base_images, check_members, extract_context
from services.tasks.execution import local_repository, split_image
from services.tasks.taskfile import TaskFileInvalid, parse_task_file
from services.tasks.variables import RunVariables, VariableUnknown, render


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("../x"), "path traversal"),
        (_member("a/../../x"), "path traversal"),
        (_member("/etc/passwd"), "path traversal"),
        (_member("a/../b"), "path traversal"),  # stays inside once normalised, but no honest archive has it
        (_member("l", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link out of the context"),
        (_member("a/l", tarfile.SYMTYPE, "../../x"), "symbolic link out of the context"),
        (_member("h", tarfile.LNKTYPE, "../x"), "hard link out of the context"),
        (_member("dev", tarfile.CHRTYPE), "files, directories and links only"),
        (_member("fifo", tarfile.FIFOTYPE), "files, directories and links only"),
    ],
)
def test_members_that_leave_the_context_are_refused(member: tarfile.TarInfo, reason: str) -> None:
    with pytest.raises(ContextInvalid, match=reason):
        check_members([_member("Dockerfile", size=10), member], ContextLimits())


def test_links_inside_the_context_and_ordinary_files_pass() -> None:
    members = [
        _member("src", tarfile.DIRTYPE),
        _member("src/a.txt", size=5),
        _member("src/link", tarfile.SYMTYPE, "a.txt"),
        _member("top", tarfile.SYMTYPE, "src/a.txt"),
        _member("hard", tarfile.LNKTYPE, "src/a.txt"),
    ]
    check_members(members, ContextLimits())


def test_the_unpacked_size_and_member_count_are_bounded() -> None:
    with pytest.raises(ContextInvalid, match="larger than 100 bytes unpacked"):
        check_members([_member("a", size=60), _member("b", size=60)], ContextLimits(max_bytes=100))
    with pytest.raises(ContextInvalid, match="more than 2 entries"):
        check_members([_member(str(i)) for i in range(3)], ContextLimits(max_members=2))


def test_a_refused_archive_extracts_nothing_and_garbage_is_a_clear_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(_member("good.txt", size=2), io.BytesIO(b"ok"))
        tar.addfile(_member("../evil.txt", size=2), io.BytesIO(b"no"))
    buffer.seek(0)
    with pytest.raises(ContextInvalid, match="path traversal"):
        extract_context(buffer, tmp_path, ContextLimits())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ContextInvalid, match=r"not a readable tar\.gz"):
        extract_context(io.BytesIO(b"not an archive at all"), tmp_path, ContextLimits())


def test_base_images_of_a_multi_stage_dockerfile() -> None:
    dockerfile = """\
# syntax=docker/dockerfile:1
ARG REGISTRY=myreg.azurecr.io
ARG TAG
FROM --platform=$BUILDPLATFORM ${REGISTRY}/sdk:${TAG:-8} AS build
RUN make
FROM build AS test
FROM \\
    $REGISTRY/runtime:8 AS final
COPY --from=build /out /app
FROM scratch
FROM myreg.azurecr.io/sdk:8
"""
    assert base_images(dockerfile, {"TAG": "9"}) == [
        "myreg.azurecr.io/sdk:9",
        "myreg.azurecr.io/runtime:8",
        "myreg.azurecr.io/sdk:8",
    ]
    assert base_images(dockerfile)[0] == "myreg.azurecr.io/sdk:8"


def test_images_of_this_registry_are_told_from_others() -> None:
    assert local_repository("reg.azurecr.io/team/base:1", "reg.azurecr.io") == ("team/base", "1")
    assert local_repository("REG.azurecr.io/base", "reg.azurecr.io") == ("base", "latest")
    assert local_repository("reg.azurecr.io/base@sha256:" + "a" * 64, "reg.azurecr.io") == (
        "base",
        "sha256:" + "a" * 64,
    )
    assert local_repository("reg.azurecr.io.evil.com/base:1", "reg.azurecr.io") is None
    assert local_repository("docker.io/library/alpine:3", "reg.azurecr.io") is None
    assert split_image("app") == ("app", "latest") and split_image("team/app:v1") == ("team/app", "v1")


def test_run_variables() -> None:
    variables = RunVariables(
        "cb12", "reg.azurecr.io", "reg", date=datetime(2026, 12, 1, 14, 5, 9, tzinfo=UTC), values={"tag": "v1"}
    )
    assert render("app:{{.Run.ID}}", variables) == "app:cb12"
    assert render("{{ .Run.Registry }}/x:{{.Values.tag}}", variables) == "reg.azurecr.io/x:v1"
    assert render("$Registry/app:{{.Run.Date}}", variables) == "reg.azurecr.io/app:20261201-140509z"
    assert render("{{.Run.RegistryName}}-{{.Run.OS}}-{{.Run.Architecture}}", variables) == "reg-linux-amd64"
    for unknown in ("{{.Run.Nope}}", "{{.Values.missing}}", "{{ .Secrets.x }}"):
        with pytest.raises(VariableUnknown, match="unknown"):
            render(unknown, variables)


def test_dockerignore_rules() -> None:
    rules = parse_dockerignore("# comment\n*.env\n**/node_modules\nbuild/\n!build/keep.txt\n/docs/*.md\n")
    assert ignored("secret.env", rules) and not ignored("sub/secret.env", rules)
    assert ignored("node_modules", rules) and ignored("a/b/node_modules/x.js", rules)
    assert ignored("build/out.bin", rules) and not ignored("build/keep.txt", rules)
    assert ignored("docs/readme.md", rules) and not ignored("docs/sub/readme.md", rules)
    assert not ignored("src/main.py", rules)


def test_acr_build_sends_the_dockerfile_even_when_ignored_and_links_as_links(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "local.env").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("*\n!src\n")
    (tmp_path / "src" / "outside").symlink_to("/etc/passwd")
    assert sorted(context_files(tmp_path, "Dockerfile")) == [".dockerignore", "Dockerfile", "src/a.txt", "src/outside"]
    archive = io.BytesIO()
    write_context(tmp_path, "Dockerfile", archive)
    archive.seek(0)
    with tarfile.open(fileobj=archive) as tar:
        link = tar.getmember("src/outside")
    assert link.issym() and link.linkname == "/etc/passwd"  # sent as it is: the service refuses it


# --- task files -----------------------------------------------------------------------------------------------
def test_a_task_file_parses_with_its_dependencies() -> None:
    task = parse_task_file(
        "version: v1.1.0\nstepTimeout: 60\nenv: [A=1]\nsecrets:\n  - id: token\nsteps:\n"
        "  - build: -t reg/a:1 --build-arg X=1 --no-cache -f sub/Dockerfile sub\n"
        "  - id: b\n    build: --tag=reg/b:1 .\n    when: ['-']\n"
        "  - id: test\n    cmd: reg/a:1 run --flag 'two words'\n    when: [acb_step_0, b]\n    timeout: 30\n"
        "    retries: 2\n    retryDelay: 1\n    env: [B=2]\n    entryPoint: /bin/sh\n    user: '1000'\n"
        "  - push: [reg/a:1, reg/b:1]\n"
    )
    first, second, test, push = task.steps
    assert task.env == ["A=1"] and task.secrets == ["token"]
    assert first.id == "acb_step_0" and first.when == [] and first.timeout == 60
    assert first.build is not None and first.build.images == ["reg/a:1"] and first.build.dockerfile == "sub/Dockerfile"
    assert first.build.context == "sub" and first.build.build_args == ["X=1"] and first.build.no_cache
    assert second.when == [] and second.build is not None and second.build.images == ["reg/b:1"]
    assert test.when == ["acb_step_0", "b"] and test.cmd == ["reg/a:1", "run", "--flag", "two words"]
    assert (test.timeout, test.retries, test.retry_delay, test.entry_point, test.user) == (30, 2, 1, "/bin/sh", "1000")
    assert push.when == ["test"] and push.push == ["reg/a:1", "reg/b:1"]  # no `when`: after the previous step


def test_volumes_and_their_mounts() -> None:
    task = parse_task_file(
        "volumes:\n  - name: config\n    secret:\n      app.json: eyJhIjogMX0=\n      key: aGk=\n"
        "steps:\n  - cmd: reg/a:1\n    volumeMounts:\n      - name: config\n        mountPath: /run/config/\n"
    )
    assert task.volumes == {"config": {"app.json": b'{"a": 1}', "key": b"hi"}}
    mount = task.steps[0].volume_mounts[0]
    assert (mount.name, mount.path) == ("config", "/run/config")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("steps:\n  - build: .\n    colour: red\n", 3, "unknown step property 'colour'"),
        ("version: v1.1.0\nsteps:\n  - id: a\n", 3, "exactly one of build, push or cmd (this one is none)"),
        ("steps:\n  - build: .\n    cmd: x\n", 2, "this one is build and cmd"),
        ("steps:\n  - id: a\n    cmd: x\n  - id: a\n    cmd: y\n", 4, "duplicate step id 'a'"),
        ("steps:\n  - cmd: x\n    when: [later]\n  - id: later\n    cmd: y\n", 3, "a later step"),
        ("steps:\n  - cmd: x\n    when: [nowhere]\n", 3, "no such step"),
        ("steps:\n  - cmd: x\n    timeout: soon\n", 3, "timeout must be a whole number"),
        ("steps:\n  - cmd: x\n    retries: 99\n", 3, "retries must be between 0 and 10"),
        ("steps:\n  - build: -t a ../outside\n", 2, "must be inside the context"),
        ("steps:\n  - build: -f /etc/Dockerfile .\n", 2, "must be inside the context"),
        ("steps:\n  - build: --squash-all .\n", 2, "unsupported option '--squash-all'"),
        ("steps:\n  - push: reg/a:1\n    detach: true\n", 2, "only a cmd step can detach"),
        ("version: v2.0.0\nsteps: []\n", 1, "unsupported version"),
        ("steps: []\n", 1, "non-empty list"),
        ("env: [NOEQUALS]\nsteps:\n  - cmd: x\n", 1, "env entries are NAME=value"),
        (
            "secrets:\n  - id: s\n    keyvault: https://kv.vault.azure.net/secrets/s\nsteps:\n  - cmd: x\n",
            2,
            "Key Vault",
        ),
        ("stepz:\n  - cmd: x\n", 1, "unknown property 'stepz'"),
        ("steps:\n  - cmd: x\n    volumeMounts:\n      - name: nope\n        mountPath: /a\n", 4, "not declared"),
        ("volumes: []\nsteps:\n  - cmd: x\n    volumeMounts:\n      - {name: v, mountPath: a}\n", 5, "absolute"),
        ("steps:\n  - cmd: x\n    volumeMounts:\n      - {name: v, mountPath: /workspace/}\n", 4, "not / nor"),
        ("steps:\n  - cmd: x\n    volumeMounts:\n      - {name: v, mountPath: '/a/../b'}\n", 4, "absolute"),
        ("steps:\n  - cmd: x\n    volumeMounts:\n      - {name: v}\n", 4, "a name and a mountPath"),
        ("steps:\n  - push: [a]\n    volumeMounts: [{name: v, mountPath: /a}]\n", 2, "only a cmd step mounts"),
        ("volumes:\n  - name: v\n    secret: {../f: aGk=}\nsteps:\n  - cmd: x\n", 3, "a plain name"),
        ("volumes:\n  - name: v\n    secret:\n      f: 'not base64!'\nsteps:\n  - cmd: x\n", 4, "not base64"),
        ("steps:\n  - cmd: x\n   bad-indent: [\n", 3, "not YAML"),
        ("", 1, "empty"),
    ],
)
def test_task_file_errors_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TaskFileInvalid) as caught:
        parse_task_file(text)
    assert caught.value.line == line, str(caught.value)
    assert message in str(caught.value)


def test_cron_schedules() -> None:
    from services.tasks.triggers import CronSchedule

    at = datetime(2031, 3, 3, 3, 7, tzinfo=UTC)  # a Monday
    assert CronSchedule.parse("7 3 * * *").matches(at) and not CronSchedule.parse("8 3 * * *").matches(at)
    assert CronSchedule.parse("*/7 */3 * * 1-5").matches(at) and not CronSchedule.parse("* * * * 0,6").matches(at)
    assert CronSchedule.parse("* * * * 7").matches(at.replace(day=2))  # Sunday is 0 and 7
    assert CronSchedule.parse("0-10 3 3 3 *").matches(at)
    assert CronSchedule.parse("7 3 15 * 1").matches(at)  # both day fields given: either matches
    for bad in ("* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"):
        with pytest.raises(ValueError):
            CronSchedule.parse(bad)
