"""The GitHub workflows lint clean (actionlint), match GitHub's workflow schema, and deploy
the way the runbook says: OIDC login, what-if on pull requests, dev on main, prod approved.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is needed for actionlint")


def load(name: str) -> dict[str, Any]:
    # The YAML 1.2 loader keeps the key `on` a string (YAML 1.1 would read it as true).
    data: dict[str, Any] = YAML(typ="safe").load(ROOT / ".github" / "workflows" / name)
    return data


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NODE), str(ROOT / "scripts" / "actionlint.cjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "deploy.yml"]


def test_workflows_pass_actionlint() -> None:
    result = actionlint(*WORKFLOWS)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_actionlint_reports_a_job_that_needs_a_missing_job(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    needs: nothing\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo hi\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'job "a" needs job "nothing" which does not exist' in result.stdout


def test_workflows_match_the_github_workflow_schema() -> None:
    result = schema_check(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_a_job_without_a_runner(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo hi\n")
    result = schema_check(broken)
    assert result.returncode == 1
    assert "broken.yml" in result.stdout


def test_ci_lints_type_checks_and_runs_the_tests() -> None:
    steps = load("ci.yml")["jobs"]["test"]["steps"]
    commands = [step.get("run", "") for step in steps]
    assert "make lint" in commands
    assert any(c.startswith("make test") for c in commands)
    assert load("ci.yml")["permissions"] == {"contents": "read"}


class TestDeployWorkflow:
    def test_logs_in_with_oidc_and_no_stored_credentials(self) -> None:
        workflow = load("deploy.yml")
        assert workflow["permissions"] == {"id-token": "write", "contents": "read"}
        for name, job in workflow["jobs"].items():
            logins = [s for s in job["steps"] if str(s.get("uses", "")).startswith("azure/login@")]
            assert len(logins) == 1, name
            assert set(logins[0]["with"]) == {"client-id", "tenant-id", "subscription-id"}, name

    def test_pull_requests_get_a_what_if_and_nothing_else(self) -> None:
        jobs = load("deploy.yml")["jobs"]
        assert jobs["what-if"]["if"] == "github.event_name == 'pull_request'"
        runs = [s["run"] for s in jobs["what-if"]["steps"] if "run" in s]
        assert runs == ["scripts/deploy.sh dev --what-if"]
        assert jobs["dev"]["if"] == "github.event_name != 'pull_request'"

    def test_main_deploys_dev_then_prod_behind_the_prod_environment(self) -> None:
        jobs = load("deploy.yml")["jobs"]
        assert jobs["dev"]["environment"]["name"] == "dev"
        assert jobs["prod"]["needs"] == "dev"
        assert jobs["prod"]["environment"]["name"] == "prod"
        for env in ("dev", "prod"):
            runs = [s["run"] for s in jobs[env]["steps"] if "run" in s]
            assert runs == [f"scripts/deploy.sh {env}"]
        assert load("deploy.yml")["concurrency"]["cancel-in-progress"] is False
