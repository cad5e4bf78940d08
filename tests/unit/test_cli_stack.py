from click.testing import CliRunner

from retail_backbone.cli import main


def test_unknown_component_is_a_usage_error_naming_the_choices():
    for command in ("up", "down", "status"):
        result = CliRunner().invoke(main, ["stack", command, "--only", "kafka,nope"])
        assert result.exit_code == 2, command
        assert "unknown component(s): nope" in result.output
        assert "kafka, registry, postgres" in result.output


def test_version_json_names_the_pinned_engines():
    import json

    result = CliRunner().invoke(main, ["version", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["apache_beam_python"] == info["beam_java_job_server"] == "2.62.0"
