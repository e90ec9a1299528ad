from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _commands():
    text = (REPO / "README.md").read_text()
    block = text.split("```")[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_readme_opens_with_the_two_commands():
    first, second = _commands()
    assert (REPO / "README.md").read_text().startswith("# pyro_deepgen\n\n```bash\n")
    for cmd in (first, second):
        assert cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && ")
    assert "pyro-deepgen compare --dataset digits" in first
    assert second.endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "sed -n 2p" in ci and "README.md" in ci and '"$rc" -eq 5' in ci
