"""Checkpoints from elsewhere: --model as a file:// or http:// URL (folder or archive), pinned by
sha256, cached; refusals of a wrong hash, grid or mask. Offline: a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import tarfile
import threading
import zipfile

import pytest
from test_cli_bids_app import SCRIPT, assert_one_line_error
from test_group_cli import run_group, site  # noqa: F401 - the site fixture
from test_model_checkpoint import trained  # noqa: F401 - the trained fixture

from bids_genbrain.model.checkpoint import CheckpointError, load_checkpoint, read_config
from bids_genbrain.model.fetch import resolve_model
from bids_genbrain.utils import cache_dir


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty model cache (the templates copied over, so they are not rebuilt)."""
    folder = tmp_path / "cache"
    shutil.copytree(cache_dir() / "templates", folder / "templates")
    monkeypatch.setenv("GENBRAIN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture()
def zoo(trained, tmp_path):  # noqa: F811
    """A model-zoo style folder: the checkpoint files with SHA256SUMS, and archives of it."""
    _, _, root = trained
    zoo = tmp_path / "zoo"
    folder = zoo / "genbrain-test"
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "README.md"):
        shutil.copy(root / "model" / name, folder / name)
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n"
        for n in ("model.safetensors", "config.json")))
    with tarfile.open(zoo / "genbrain-test.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="genbrain-test")
    with zipfile.ZipFile(zoo / "genbrain-test.zip", "w") as zf:
        for path in folder.iterdir():
            zf.write(path, path.name)
    return zoo


@pytest.fixture()
def server(zoo):
    """An HTTP server on 127.0.0.1 serving the zoo folder (no network needed)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(zoo))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _sha(zoo):
    return read_config(zoo / "genbrain-test")["weights_sha256"]


@pytest.mark.parametrize("name", ["genbrain-test/", "genbrain-test.tar.gz", "genbrain-test.zip"])
def test_http_folder_and_archives_are_fetched_pinned_and_cached(zoo, server, cache, name):
    url = f"{server}/{name}#sha256={_sha(zoo)}"
    folder = resolve_model(url)
    assert cache in folder.parents and folder.name == f"sha256-{_sha(zoo)}"
    assert load_checkpoint(folder).arch.resolution == 8.0
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    # cached: the same reference resolves without the server
    shutil.rmtree(zoo)
    assert resolve_model(url) == folder


def test_file_url_unpinned_is_cached_by_url(zoo, cache):
    url = (zoo / "genbrain-test").as_uri()
    folder = resolve_model(url)
    assert folder.name.startswith("url-") and (folder / "SHA256SUMS").is_file()
    assert resolve_model(url) == folder


def test_wrong_pin_is_refused_and_nothing_cached(zoo, server, cache):
    with pytest.raises(CheckpointError, match="pinned") as err:
        resolve_model(f"{server}/genbrain-test/#sha256={'0' * 64}")
    assert "\n" not in str(err.value)
    models = cache / "models"
    assert not models.exists() or not any(models.iterdir())
    with pytest.raises(CheckpointError, match="sha256=<64 hex"):
        resolve_model(f"{server}/genbrain-test/#md5=abc")


def test_unreachable_url_one_line(cache):
    with pytest.raises(CheckpointError, match="cannot download"):
        resolve_model("http://127.0.0.1:9/none/")
    with pytest.raises(CheckpointError, match="http://, https:// or file://"):
        resolve_model("s3://bucket/model")


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "SHA256SUMS").unlink()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["mask"].update(shape=[97, 115, 97]), "grid"),
    (lambda c: c["mask"].update(space="MNI152NLin2009cAsym"), "grid"),
    (lambda c: c["mask"].update(sha256="0" * 64), "different brain mask"),
    (lambda c: c.update(weights_sha256="0" * 64), "sha256"),
])
def test_mismatched_checkpoint_refused_over_http(zoo, server, cache, edit, message):
    _edit_config(zoo / "genbrain-test", edit)
    with pytest.raises(CheckpointError, match=message) as err:
        resolve_model(f"{server}/genbrain-test/")
    assert "\n" not in str(err.value)


def test_sha256sums_mismatch_refused(zoo):
    folder = zoo / "genbrain-test"
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  config.json\n")
    with pytest.raises(CheckpointError, match="SHA256SUMS"):
        resolve_model(folder)
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  missing.bin\n")
    with pytest.raises(CheckpointError, match="lists missing.bin"):
        resolve_model(folder)


def test_cli_refuses_a_wrong_pin_in_one_line(zoo, server, cache, tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    proc = subprocess.run(
        [SCRIPT, bids, tmp_path / "out", "group", "--contrast", "diagnosis", "--model",
         f"{server}/genbrain-test.tar.gz#sha256={'1' * 64}"],
        capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "genbrain-test.tar.gz", "pinned")


def test_group_level_fine_tunes_a_pinned_http_checkpoint(zoo, server, cache, site,  # noqa: F811
                                                         tmp_path):
    url = f"{server}/genbrain-test.tar.gz#sha256={_sha(zoo)}"
    proc = run_group(site, tmp_path / "out", "--model", url, "--steps", "2",
                     "--n-synthetic", "8", "--sampling-steps", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = read_config(tmp_path / "out" / "group" / "model")
    parent = config["provenance"]["parent"]
    assert parent["weights_sha256"] == _sha(zoo)
    assert parent["path"] == str(cache / "models" / f"sha256-{_sha(zoo)}")
