"""``--help`` explains every command group and the synth options."""

from typer.testing import CliRunner

from cli.main import app

ENV = {"COLUMNS": "160"}


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


def test_top_level_lists_the_command_groups_with_their_purpose():
    out = _help()
    for group, words in {"data": "synthetic", "prep": "stores", "catalog": "fingerprints", "show": "Pictures"}.items():
        line = next(line for line in out.splitlines() if line.lstrip("│ ").startswith(f"{group} "))
        assert words in line, line


def test_synth_help_explains_presets_seed_and_output():
    out = " ".join(_help("data", "synth").split())
    for needle in ("nuScenes on-disk format", "--preset", "tiny: 2 scenes", "demo: 4 scenes", "mini: 10 scenes", "1600x900", "--seed", "byte-identical", "--out", "resumes"):
        assert needle in out, needle


def test_unknown_preset_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "--preset", "huge", "--out", str(tmp_path / "x")], env=ENV)
    assert result.exit_code == 2
    assert "unknown preset 'huge'" in result.output and "tiny, demo, transfer, mini" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
