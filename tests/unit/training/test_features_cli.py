"""`featurewatch features list|show|search` on the planted model and bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from planted_model import ACT, PLANTED, planted_tokens, save_planted_run

from featurewatch.cli import cli
from featurewatch.training.analyze import AnalyzeConfig, analyze_bundle


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    model, bundle = save_planted_run(root)
    cfg = AnalyzeConfig(n_tokens=768, top_k=4, window=2, n_scored_features=4,
                        n_scored_neurons=4, universality=False, bf16=False, threads=1)
    analyze_bundle(model, bundle, planted_tokens(), cfg, progress=False)
    return root


def _run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["features", *args], env=env)


def test_search_positive_negative_finds_planted_feature(artifacts, tmp_path):
    rng = np.random.default_rng(0)
    others = [(int(a), int(b)) for a, b in rng.integers(7, 16, (12, 2))]
    (tmp_path / "pos.txt").write_text("".join(f"t{a} t5 t{b}\n" for a, b in others))
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": f"t{a} t6 t{b}"}) + "\n"
                                                for a, b in others))
    out = tmp_path / "flags.yaml"
    result = _run("search", "--artifacts", str(artifacts), "-d", "planted-20",
                  "--positive", str(tmp_path / "pos.txt"), "--negative",
                  str(tmp_path / "neg.jsonl"), "--top", "3", "--severity", "critical",
                  "--runbook-url", "https://runbooks/x", "-o", str(out))
    assert result.exit_code == 0, result.output
    flags = yaml.safe_load(out.read_text())["flags"]
    first = flags[0]
    assert first["dictionary"] == "planted-20" and first["feature"] == PLANTED
    # positives peak at ACT (t5), negatives at ACT/2 (t6): the cut is halfway
    assert first["min_activation"] == pytest.approx(0.75 * ACT, rel=1e-5)
    assert first["severity"] == "critical" and first["runbook_url"] == "https://runbooks/x"
    assert '"t5"' in first["name"]
    assert "1" in result.output  # precision / recall columns printed
    # the monitor loads the file as is
    from featurewatch.services.monitor.flags import read_flags_file

    loaded = read_flags_file(out)
    assert (loaded[0].dictionary_id, loaded[0].feature) == ("planted-20", PLANTED)


def test_search_prints_yaml_and_reads_config_file(artifacts, tmp_path):
    (tmp_path / "pos.txt").write_text("t5 t1\nt2 t5\n")
    (tmp_path / "neg.txt").write_text("t1 t2\nt2 t3\n")
    (tmp_path / "fw.toml").write_text(f'[features]\nartifacts = "{artifacts}"\n'
                                      'dictionary = "planted-20"\ntop = 1\n')
    result = _run("--config", str(tmp_path / "fw.toml"), "search", "--positive",
                  str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"), "--yaml")
    assert result.exit_code == 0, result.output
    flags = yaml.safe_load(result.output)["flags"]
    assert len(flags) == 1 and flags[0]["feature"] == PLANTED
    assert flags[0]["min_activation"] == pytest.approx(ACT / 2, rel=1e-5)


def test_search_by_label_and_list_and_show(artifacts):
    base = ["--artifacts", str(artifacts)]
    result = _run("search", *base, "--label", '"t5"', "--yaml")
    assert result.exit_code == 0, result.output
    assert [f["feature"] for f in yaml.safe_load(result.output)["flags"]] == [PLANTED]
    listed = _run("list", *base, "--sort", "density", "--top", "3", "--json")
    rows = json.loads(listed.output)
    assert len(rows) == 3 and rows[0]["density"] >= rows[1]["density"] >= rows[2]["density"]
    shown = _run("show", *base, str(PLANTED))
    assert shown.exit_code == 0 and "promotes" in shown.output and "'t9' +" in shown.output
    neurons = _run("show", *base, "--neurons", "3", "--json")
    assert json.loads(neurons.output)["feature"] == 3


def test_environment_sets_the_artifacts(artifacts):
    result = _run("list", "--json", env={"FEATUREWATCH_FEATURES_ARTIFACTS":
                                                    str(artifacts)})
    assert result.exit_code == 0 and len(json.loads(result.output)) == 10


def test_bad_inputs_name_the_problem(artifacts, tmp_path):
    base = ["--artifacts", str(artifacts)]
    result = _run("search", *base)
    assert "needs --positive FILE and --negative FILE" in str(result.exception)
    result = _run("search", *base, "--positive", str(tmp_path / "missing.txt"),
                  "--negative", str(tmp_path / "missing.txt"))
    assert "missing.txt: example file does not exist" in str(result.exception)
    result = _run("show", *base, "99")
    assert "feature 99 is out of range" in str(result.exception)
    (tmp_path / "dictionaries").mkdir()
    result = _run("list", "--artifacts", str(tmp_path))
    assert "--dictionary is required" in str(result.exception)
    result = _run("list", "--artifacts", str(artifacts), "-d", "nope")
    assert "--dictionary 'nope'" in str(result.exception)
    assert "is a dictionary bundle" in str(result.exception)
    assert "['planted-20']" in str(result.exception)  # the bundles that do exist
    result = _run("list", "--artifacts", str(tmp_path / "absent"))
    assert "absent/dictionaries does not exist" in str(result.exception)
    empty = tmp_path / "empty" / "dictionaries" / "b"
    empty.mkdir(parents=True)
    (empty / "cfg.json").write_text("{}")
    result = _run("list", "--artifacts", str(empty.parent.parent), "-d", "b")
    assert "b/features.parquet: file is missing" in str(result.exception)
    (empty / "features.parquet").write_bytes(b"not parquet")
    result = _run("show", "--artifacts", str(empty.parent.parent), "-d", "b", "0")
    assert "cannot read the feature table" in str(result.exception)
    result = _run("search", *base, "--label", "t5", "--severity", "loud")
    assert "severity='loud' must be one of" in str(result.exception)


def test_bad_example_files_name_the_file(artifacts, tmp_path):
    base = ["--artifacts", str(artifacts), "-d", "planted-20"]
    (tmp_path / "good.txt").write_text("t5 t1\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "t5"}\n{oops\n')
    result = _run("search", *base, "--positive", str(tmp_path / "latin1.txt"),
                  "--negative", str(tmp_path / "good.txt"))
    assert "latin1.txt: not UTF-8 text (byte 3" in str(result.exception)
    result = _run("search", *base, "--positive", str(tmp_path / "good.txt"),
                  "--negative", str(tmp_path / "bad.jsonl"))
    assert "bad.jsonl:2: not valid JSON" in str(result.exception)
    result = _run("search", *base, "--positive", str(tmp_path), "--negative",
                  str(tmp_path / "good.txt"))
    assert result.exit_code == 2 and "is a directory" in result.output
    result = _run("search", *base, "--positive", str(tmp_path / "good.txt"),
                  "--negative", str(tmp_path / "good.txt"), "--model", str(tmp_path))
    assert "not a model directory" in str(result.exception)


def test_errors_reach_the_user_as_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from featurewatch.cli import main

    monkeypatch.setattr("sys.argv", ["featurewatch", "features", "list", "--artifacts",
                                     str(tmp_path / "absent")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --artifacts") and "Traceback" not in err


def test_help_names_every_subcommand_and_option():
    top = _run("--help")
    assert top.exit_code == 0
    for line in ("list    List features or neurons of a bundle.",
                 "search  Propose flags: contrastive or label search.",
                 "show    Show one feature's page in the terminal.",
                 "featurewatch features search -d a1-4096 --positive pos.txt"):
        assert line in top.output
    search = _run("search", "--help").output
    for option in ("--positive FILE", "--negative FILE", "--label TEXT", "--output FILE",
                   "--severity", "--runbook-url", "min_activation"):
        assert option in search
    assert "--sort [feature|density|max_activation|interp_score]" in _run("list", "--help").output
    assert "FEATURE" in _run("show", "--help").output


def test_label_search_output_is_a_flag_file_the_monitor_loads(artifacts, tmp_path):
    from featurewatch.services.monitor.flags import check_in_dictionary, read_flags_file

    out = tmp_path / "label-flags.yaml"
    result = _run("search", "--artifacts", str(artifacts), "--label", "t5", "--severity",
                  "info", "-o", str(out))
    assert result.exit_code == 0, result.output
    flags = read_flags_file(out)
    assert [f.feature for f in flags] == [PLANTED]
    flag = check_in_dictionary(flags[0], 20, lambda: ["planted-20"])
    assert flag.dictionary_id == "planted-20" and flag.severity == "info"
    assert flag.min_activation == pytest.approx(0.25 * ACT, rel=1e-5)
    assert flag.name.startswith("tokens:") and '"t5"' in flag.name
