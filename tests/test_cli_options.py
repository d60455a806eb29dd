"""Options of both entry points: one source per option, grouped help, every bad value -> exit 2.

Values are checked by ``Config.validate`` before any work starts; the command line errors that
click raises itself (an unknown option, a word for a number) are one line too. Most cases run
the console script's ``main`` in this process (the same code path, without the ~2 s start of a
subprocess); a few go through the installed scripts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _bids_factory import make_dataset

from bids_genbrain import __version__
from bids_genbrain.cli import bids_app, tools
from bids_genbrain.config import PANELS, Config
from bids_genbrain.errors import InputError

BIN = Path(sys.executable).parent


def script(name: str) -> str:
    return shutil.which(name) or str(BIN / name)


def call(main, argv, capsys) -> tuple[int, str, str]:
    """Run a console-script ``main`` in-process; return exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, argv)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def one_line_error(code: int, err: str, prog: str = "bids_genbrain") -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    return make_dataset(root / "bids", subjects=("01",)), root


def test_help_is_grouped_and_lists_every_option_with_its_config_default(capsys):
    code, out, _ = call(bids_app.main, ["-h"], capsys)
    assert code == 0
    positions = [out.index(f"\n{panel}:\n") for panel in PANELS]
    assert positions == sorted(positions), "panels out of order"
    for name, spec, default in Config.options():
        flag = "--" + name.replace("_", "-")
        assert flag in out, flag
        panel_text = out[out.index(f"\n{spec.panel}:\n"):]
        assert flag in panel_text.split("\n\n")[0], f"{flag} not under {spec.panel}"
    # defaults shown come from the Config fields (nothing restated in the CLI)
    n_synthetic = Config.__dataclass_fields__["n_synthetic"].default
    assert "[default: 42]" in out and f"[default: {n_synthetic}]" in out


def test_cli_passes_only_given_values(tmp_path, monkeypatch, capsys, tiny):
    """Options not given keep the Config default; given ones (any spelling) reach the Config."""
    seen = {}

    def fake_run(config):
        seen["config"] = config
        return 0

    monkeypatch.setattr(bids_app, "run", fake_run)
    ds, _ = tiny
    code, _, err = call(bids_app.main, [ds, tmp_path / "out", "participant", "--n_cpus", "1",
                                        "--participant_label", "01", "-vv"], capsys)
    assert code == 0, err
    config = seen["config"]
    defaults = {name: default for name, _, default in Config.options()}
    assert config.nprocs == 1 and config.participant_label == ["01"] and config.verbose == 2
    assert config.seed == defaults["seed"] and config.condition == defaults["condition"]
    assert config.analysis_level == ["participant"]


def test_config_made_in_python_is_checked_like_the_cli(tiny, tmp_path):
    ds, _ = tiny
    with pytest.raises(InputError, match="--mem-gb must be at least 1 GB, got -4"):
        Config(bids_dir=ds, output_dir=tmp_path / "o", analysis_level="participant",
               mem_gb=-4).validate()
    with pytest.raises(InputError, match="the group level needs --contrast"):
        Config(bids_dir=ds, output_dir=tmp_path / "o", analysis_level="group").validate()
    config = Config(bids_dir=ds, output_dir=tmp_path / "o", contrast="diagnosis",
                    analysis_level=["group", "participant"]).validate()
    assert config.analysis_level == ["participant", "group"]


def _bad_cases(root: Path) -> list[tuple[list[str], str]]:
    afile = root / "afile.txt"
    afile.write_text("x")
    bad_json = root / "bad.json"
    bad_json.write_text("{not json")
    bad_tsv = root / "bad.tsv"
    bad_tsv.write_text("subject\tage\nsub-01\t3\n")
    return [
        (["--mem-gb", "-4"], "--mem-gb must be at least 1 GB"),
        (["--mem-gb", "nan"], "--mem-gb must be a finite number"),
        (["--nprocs", "-1"], "--nprocs must be at least 0"),
        (["--nprocs", "abc"], "'--nprocs'"),
        (["--omp-nthreads", "4", "--nprocs", "2"], "cannot exceed --nprocs"),
        (["--resolution", "0"], "--resolution must be at least 0.5 mm"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--seed", str(2**31)], "--seed must be at most"),
        (["--lr", "0"], "--lr must be greater than 0"),
        (["--cfg-scale", "-1"], "--cfg-scale must be at least 0"),
        (["--privacy-threshold", "1.5"], "--privacy-threshold must be at most 1"),
        (["--n-synthetic", "0"], "--n-synthetic must be at least 1"),
        (["--sampling-steps", "5000"], "--sampling-steps must be at most 1000"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--average", "0"], "--average must be at least 1"),
        (["--device", "tpu"], "--device 'tpu' unknown"),
        (["--preset", "huge"], "--preset 'huge' unknown"),
        (["--plugin", "Foo"], "--plugin 'Foo' unknown"),
        (["--bids-filter-file", root / "missing.json"], "--bids-filter-file not found"),
        (["--bids-filter-file", root], "--bids-filter-file must be a file"),
        (["--derivatives", afile], "--derivatives must be a folder"),
        (["--model", root / "nomodel"], "--model not found"),
        (["--reference-map", root / "nomap.nii.gz"], "--reference-map not found"),
        (["--plugin-args", bad_json], "--plugin-args is not valid JSON"),
        (["-w", afile], "--work-dir is a file"),
        (["--exclude-participants", bad_tsv], "needs a participant_id column"),
        (["--exclude-participants", root / "none.tsv"], "--exclude-participants not found"),
        (["--foo"], "No such option: --foo"),
    ]


def test_every_bad_value_is_one_line_exit_2(tiny, capsys):
    ds, root = tiny
    for extra, fragment in _bad_cases(root):
        code, _, err = call(bids_app.main, [ds, root / "out", "participant", *extra], capsys)
        line = one_line_error(code, err)
        assert fragment in line, (extra, line)
    assert not (root / "out").exists(), "a refused run wrote outputs"


def test_bad_positional_values(tiny, capsys):
    ds, root = tiny
    afile = root / "afile.txt"
    afile.write_text("x")
    for argv, fragment in [
        ([ds, root / "out", "sideways"], "analysis level sideways unknown"),
        ([ds, root / "out", "participant", "participant"], "given twice"),
        ([ds, afile, "participant"], "OUTPUT_DIR is a file"),
        ([root / "none", root / "out", "participant"], "BIDS_DIR does not exist"),
    ]:
        line = one_line_error(*call(bids_app.main, argv, capsys)[::2])
        assert fragment in line, line


def test_console_scripts_version_help_and_usage_errors(tmp_path):
    """Through the installed scripts: --version, -h on every command, one-line usage errors."""
    for prog in ("bids_genbrain", "genbrain"):
        proc = subprocess.run([script(prog), "--version"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.strip() == f"{prog} {__version__}"
    proc = subprocess.run([script("genbrain"), "-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Commands:" in proc.stdout
    proc = subprocess.run([script("bids_genbrain"), str(tmp_path), str(tmp_path / "o"),
                           "participant", "--mem-gb", "-4"], capture_output=True, text=True)
    assert "must be at least 1 GB" in one_line_error(proc.returncode, proc.stderr)


@pytest.mark.parametrize("command", ["simulate", "pretrain", "sample", "demo", "evaluate", "augment",
                                     "fetch-templates"])
def test_genbrain_commands_have_short_help(command, capsys):
    code, out, _ = call(tools.main, [command, "-h"], capsys)
    assert code == 0 and f"genbrain {command}" in out


def test_genbrain_bad_value_is_one_line(capsys, tmp_path):
    code, _, err = call(tools.main, ["simulate", tmp_path / "s", "--n-subjects", "abc"], capsys)
    assert "--n-subjects" in one_line_error(code, err, "genbrain")
    code, _, err = call(tools.main, ["demo", tmp_path / "d", "--site-size", "4"], capsys)
    assert "--site-size" in one_line_error(code, err, "genbrain")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    code, _, err = call(tools.main, ["demo", tmp_path / "used"], capsys)
    assert "is not empty" in one_line_error(code, err, "genbrain demo")


def test_plugin_args_file_is_read(tiny, tmp_path):
    ds, _ = tiny
    args = tmp_path / "plugin.json"
    args.write_text(json.dumps({"sbatch_args": "--mem=4G"}))
    config = Config(bids_dir=ds, output_dir=tmp_path / "o", analysis_level="participant",
                    plugin="SLURM", plugin_args=args).validate()
    assert config.plugin_settings == {"sbatch_args": "--mem=4G"}
    assert config.plugin_args == args.resolve()
