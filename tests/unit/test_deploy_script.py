"""scripts/deploy.sh runs the az commands of the runbook, in order, and stops at the first
failure. A fake ``az`` and ``curl`` on PATH record their arguments; nothing reaches Azure.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "deploy.sh"

OUTPUTS = {
    "functionAppName": {"type": "String", "value": "func-advisoros-dev-abc123"},
    "apiHostName": {"type": "String", "value": "func-advisoros-dev-abc123.azurewebsites.net"},
}

# Each fake appends its argv as one JSON line; az answers a deployment with its outputs and
# fails the command named in FAKE_AZ_FAIL.
FAKE = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
fail = os.environ.get("FAKE_AZ_FAIL")
if fail and " ".join(args).startswith(fail):
    print("ERROR: (DeploymentFailed) fake failure", file=sys.stderr)
    sys.exit(1)
if args[:3] == ["deployment", "group", "create"]:
    print(os.environ["FAKE_OUTPUTS"])
if os.path.basename(sys.argv[0]) == "curl":
    print('{"status": "ok"}', end="")
"""


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("az", "curl"):
        fake = bin_dir / name
        fake.write_text(FAKE)
        fake.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.jsonl"),
        "FAKE_OUTPUTS": json.dumps(OUTPUTS),
        "POSTGRES_ADMIN_PASSWORD": "not-a-real-password",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "AZURE_RESOURCE_GROUP": "rg-test",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_deploy_runs_what_if_deploy_publish_and_smoke_test_in_order(
    fakes: dict[str, str],
) -> None:
    result = run(fakes, "dev")
    assert result.returncode == 0, result.stderr

    made = calls(fakes)
    assert [c[:4] for c in made] == [
        ["az", "group", "create", "--name"],
        ["az", "deployment", "group", "what-if"],
        ["az", "deployment", "group", "create"],
        ["az", "functionapp", "deployment", "source"],
        ["curl", "--fail", "--silent", "--show-error"],
        ["curl", "--fail", "--silent", "--show-error"],
    ]
    for call in made[1:3]:
        assert flag(call, "--resource-group") == "rg-test"
        assert flag(call, "--parameters") == "bicep/dev.bicepparam"
        assert flag(call, "--template-file") == "bicep/main.bicep"
    publish = made[3]
    assert flag(publish, "--name") == "func-advisoros-dev-abc123"
    assert flag(publish, "--build-remote") == "true"
    assert made[4][-1] == "https://func-advisoros-dev-abc123.azurewebsites.net/api/health"
    assert made[5][-1] == "https://func-advisoros-dev-abc123.azurewebsites.net/api/ready"
    assert Path(fakes["GITHUB_OUTPUT"]).read_text() == (
        "api_url=https://func-advisoros-dev-abc123.azurewebsites.net\n"
    )


def test_the_package_holds_the_app_and_not_the_local_tools(fakes: dict[str, str]) -> None:
    assert run(fakes, "dev").returncode == 0
    package = ROOT / flag(calls(fakes)[3], "--src")
    names = zipfile.ZipFile(package).namelist()
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(names)
    assert any(n.startswith("functions/") for n in names)
    assert any(n.startswith("shared/") for n in names)
    assert not [n for n in names if n.split("/")[0] in {"tests", "devhost", "bench", ".github"}]


def test_deploying_twice_issues_the_same_commands(fakes: dict[str, str]) -> None:
    assert run(fakes, "dev").returncode == 0
    first = calls(fakes)
    assert run(fakes, "dev").returncode == 0
    assert calls(fakes)[len(first) :] == first
    assert flag(first[2], "--name") == "advisoros-dev"


def test_what_if_only_changes_nothing(fakes: dict[str, str]) -> None:
    result = run(fakes, "prod", "--what-if")
    assert result.returncode == 0, result.stderr
    made = calls(fakes)
    assert [c[1:4] for c in made] == [
        ["group", "create", "--name"],
        ["deployment", "group", "what-if"],
    ]
    assert flag(made[1], "--parameters") == "bicep/prod.bicepparam"


def test_a_failed_deployment_publishes_nothing(fakes: dict[str, str]) -> None:
    result = run({**fakes, "FAKE_AZ_FAIL": "deployment group create"}, "dev")
    assert result.returncode == 1
    assert "fake failure" in result.stderr
    assert [c[1:4] for c in calls(fakes)][-1] == ["deployment", "group", "create"]


def test_refuses_an_unknown_environment_before_any_call(fakes: dict[str, str]) -> None:
    result = run(fakes, "staging")
    assert result.returncode == 2
    assert "usage: scripts/deploy.sh dev|prod [--what-if]" in result.stderr
    assert calls(fakes) == []


def test_refuses_to_run_without_the_postgres_password(fakes: dict[str, str]) -> None:
    env = {k: v for k, v in fakes.items() if k != "POSTGRES_ADMIN_PASSWORD"}
    result = run(env, "dev")
    assert result.returncode == 2
    assert "POSTGRES_ADMIN_PASSWORD is not set" in result.stderr
    assert calls(fakes) == []
