"""The GitHub Actions workflows: valid against the workflow schema, and doing what the README says.

The schema check uses check-jsonschema's vendored copy of SchemaStore's GitHub workflow schema
(offline; the `dev` extra installs it). actionlint would check more (expressions, action inputs),
but its PyPI wrapper downloads the binary from GitHub while installing, which CI machines without
the open web cannot do; the checks below cover what these workflows rely on.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SCHEMAS = ("vendor.github-workflows", "custom.github-workflows-require-timeout")


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the bare key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def _validate(paths: list[Path], schema: str) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema comes with the dev extra")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _job_using(workflow: dict, action: str) -> dict:
    jobs = [job for job in workflow["jobs"].values()
            if any(step.get("uses", "").startswith(action + "@") for step in job.get("steps", []))]
    assert len(jobs) == 1, f"expected one job using {action}, found {len(jobs)}"
    return jobs[0]


def test_there_are_a_ci_and_a_book_workflow():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "book.yml"}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_workflows_match_the_github_workflow_schema(schema: str):
    result = _validate(WORKFLOWS, schema)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path):
    broken = (ROOT / ".github" / "workflows" / "ci.yml").read_text().replace("runs-on:", "run-on:")
    (tmp_path / "broken.yml").write_text(broken)
    result = _validate([tmp_path / "broken.yml"], "vendor.github-workflows")
    assert result.returncode != 0 and "runs-on" in result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_need_existing_jobs_and_actions_are_pinned_to_a_major_version(path: Path):
    workflow = _load(path)
    jobs = workflow["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for other in [needs] if isinstance(needs, str) else needs:
            assert other in jobs and other != name, f"{path.name}: {name} needs unknown job {other!r}"
    for step in _steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
    text = path.read_text()
    assert text.count("${{") == text.count("}}"), f"{path.name}: unbalanced ${{{{ }}}} expression"


def test_ci_runs_the_test_command_on_pushes_and_pull_requests():
    workflow = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert any(step.get("run", "").strip() == "bash .ci/run" for step in _steps(workflow))
    assert (ROOT / ".ci" / "run").exists()


def test_book_workflow_builds_from_committed_outputs_and_deploys_to_pages():
    workflow = _load(ROOT / ".github" / "workflows" / "book.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["concurrency"]["group"]
    steps = _steps(workflow)
    runs = [step.get("run", "") for step in steps]
    assert any("bash .ci/build-book --from-outputs" in run for run in runs), runs
    assert "--from-outputs" in (ROOT / ".ci" / "build-book").read_text()
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    build = _job_using(workflow, "actions/upload-pages-artifact")
    assert any(step.get("uses", "").startswith("actions/configure-pages@") for step in build["steps"])

    deploy = _job_using(workflow, "actions/deploy-pages")
    build_name = next(name for name, job in workflow["jobs"].items() if job is build)
    assert build_name in ([deploy["needs"]] if isinstance(deploy["needs"], str) else deploy["needs"])
    permissions = {**workflow.get("permissions", {}), **deploy.get("permissions", {})}
    assert permissions.get("pages") == "write" and permissions.get("id-token") == "write", permissions
    assert deploy["environment"]["name"] == "github-pages"


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_config_has_the_repository_and_the_binder_and_colab_launch_buttons():
    config = _config()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", config["repository"]["url"])
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["html"]["use_repository_button"] is True
    # Binder builds its environment from environment.yml, which must install vslib itself.
    assert "-e ." in (ROOT / "environment.yml").read_text()


def test_the_repository_address_is_written_only_in_config():
    url = _config()["repository"]["url"]
    owner_and_name = url.removeprefix("https://github.com/")
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    elsewhere = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if name == "_config.yml" or not path.is_file() or path.suffix not in {".md", ".yml", ".yaml", ".toml",
                                                                                ".py", ".ipynb", ".txt", ".cfg"}:
            continue
        if owner_and_name in path.read_text(errors="replace"):
            elsewhere.append(name)
    assert not elsewhere, f"{owner_and_name} is written outside _config.yml in {elsewhere}"
