from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    return {ln.split("==")[0].lower(): ln.split("==")[1] for ln in lines if "==" in ln}


def test_environment_yml_and_requirements_agree():
    req = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(req) == _pins(pip_section)
    assert all("==" in r for r in req), "every requirement is pinned"
    assert "python=3.11" in env["dependencies"]
    assert "-e ." in pip_section
    assert _pins(req)["torch"] == "2.14.1" and _pins(req)["torchvision"] == "0.29.1"
