"""`animate-bench`: choices from config.PRESETS / GENERATORS, errors in one line with `animate`'s exit codes."""
from animate_cli import benchmark
from animate_cli.cli_common import EXIT_USAGE


def test_bad_usage_exits_2_and_a_missing_input_exits_1(tmp_path, capsys):
    for argv in (["models", "--preset", "tiny"], ["models", "--generator", "static"], ["pipeline"], ["nothing"]):
        assert benchmark.main(argv) == EXIT_USAGE, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "animate-bench --help" in err, err
    assert benchmark.main(["pipeline", str(tmp_path / "none.png"), str(tmp_path / "none.mp4"), "--repeat", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err


def test_help_shows_the_settings_dataclass_defaults(capsys):
    assert benchmark.main(["models", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: small, paper]" in text and "[paper|small]" in text  # 'tiny' is for tests only
    assert f"[default: {benchmark.ModelsBench().repeat};" in text
