"""`animate-bench`: choices from config.PRESETS / GENERATORS, errors in one line with `animate`'s exit codes;
the sharpness measurement."""
import json

import pytest

from animate_cli import benchmark
from animate_cli.cli_common import EXIT_USAGE
from conftest import SHARED


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


def test_sharpness_without_the_data_says_where_to_point(tmp_path, capsys):
    assert benchmark.main(["sharpness", "--shared", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--shared" in err, err


@pytest.mark.needs_shared
def test_sharpness_old_path_against_the_composite(tmp_path, capsys, one_thread):
    out = tmp_path / "s.json"
    assert benchmark.main(["sharpness", "--sizes", "512", "--frames", "2", "--shared", str(SHARED),
                           "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["portrait"].split()[0] for r in rows] == ["astronaut", "retalking_2", "einstein"]
    for r in rows:
        assert r["new_f0"] >= 0.95 and r["enc_f0"] >= 0.9 and r["old_f0"] < 0.8, r
