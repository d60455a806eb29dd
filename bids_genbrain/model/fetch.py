"""Checkpoints from elsewhere: ``--model`` as a URL, fetched once into the cache and verified.

``--model`` takes

* a checkpoint folder (``model.safetensors``, ``config.json``; optionally ``SHA256SUMS`` in
  ``sha256sum`` format, as model zoos publish, whose every listed file is checked);
* an ``http(s)://`` or ``file://`` URL of such a folder (``config.json``, ``model.safetensors``
  and, when present, ``README.md`` and ``SHA256SUMS`` are fetched), or of a ``.tar.gz``,
  ``.tgz``, ``.tar`` or ``.zip`` archive holding one;
* any of these followed by ``#sha256=<hex>``: the weights' sha256 (``weights_sha256`` of its
  ``config.json``, printed in its model card) the checkpoint must have. Pin what you run: a
  server can change both the weights and the config it serves.

A fetched checkpoint is stored under ``GENBRAIN_CACHE_DIR/models/`` (pinned:
``sha256-<hex>``; else ``url-<hash of the URL>``) and reused from there without network, as
TemplateFlow's cache is. Downloads go to a temporary folder beside the cache entry and are
renamed into place only once verified, so a killed download leaves nothing a rerun would use,
and parallel jobs fetching the same model do not clash. Every refusal (unreachable URL, hash,
grid or mask mismatch) is one :class:`~bids_genbrain.model.checkpoint.CheckpointError` line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..utils import cache_dir
from .checkpoint import CARD, CONFIG, SUMS, WEIGHTS, CheckpointError, verify_checkpoint

LOGGER = logging.getLogger(__name__)

SCHEMES = ("http", "https", "file")
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
TIMEOUT_S = 60.0


def is_url(ref: str | Path) -> bool:
    """Whether a ``--model`` value is a URL (``http``, ``https``, ``file``)."""
    return urllib.parse.urlsplit(str(ref)).scheme in SCHEMES


def split_pin(ref: str) -> tuple[str, str | None]:
    """``"<where>#sha256=<hex>"`` -> ``("<where>", "<hex>")``; no pin -> ``(ref, None)``.

    Raises
    ------
    CheckpointError
        A fragment that is not a 64-digit hex sha256.
    """
    where, sep, fragment = ref.partition("#")
    if not sep:
        return ref, None
    key, _, value = fragment.partition("=")
    value = value.strip().lower()
    if key != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CheckpointError(f"{ref}: the part after '#' must be sha256=<64 hex digits> (the "
                              "weights_sha256 of the checkpoint's config.json)")
    return where, value


def resolve_model(ref: str | Path) -> Path:
    """The verified local checkpoint folder of a ``--model`` value.

    Parameters
    ----------
    ref : str or path-like
        A folder, or a URL of a folder or archive, optionally ``#sha256=<hex>`` (see the module
        docstring).

    Returns
    -------
    pathlib.Path
        A folder that :func:`~bids_genbrain.model.checkpoint.load_checkpoint` accepts.

    Raises
    ------
    CheckpointError
        Not found, unreachable, or a hash, grid or mask that does not match.
    """
    where, pin = split_pin(str(ref))
    if not is_url(where):
        if "://" in where:
            raise CheckpointError(f"{where}: --model URLs must be http://, https:// or file://")
        folder = Path(where).expanduser().resolve()
        if not folder.exists():
            raise CheckpointError(f"{folder}: --model not found; give a checkpoint folder or "
                                  "a URL")
        _check_pin(folder, pin, where)
        return folder
    name = f"sha256-{pin}" if pin else "url-" + hashlib.sha256(where.encode()).hexdigest()[:24]
    target = cache_dir() / "models" / name
    if target.is_dir():
        try:
            _check_pin(target, pin, where)
            LOGGER.info("--model %s: using the cached copy in %s", where, target)
            return target
        except CheckpointError as exc:
            LOGGER.warning("cached copy of %s is unusable (%s); fetching it again", where, exc)
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        folder = _fetch_archive(where, tmp) if _is_archive(where) else _fetch_folder(where, tmp)
        _check_pin(folder, pin, where)
        try:
            os.replace(folder, target)
        except OSError:  # another job put the same checkpoint there first
            if not target.is_dir():
                raise
        LOGGER.info("--model %s: fetched into %s", where, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_pin(folder: Path, pin: str | None, where: str) -> None:
    config = verify_checkpoint(folder)
    if pin is not None and config["weights_sha256"] != pin:
        raise CheckpointError(f"{where}: weights sha256 {config['weights_sha256'][:12]}... is not "
                              f"the pinned {pin[:12]}...; check the URL and the #sha256 pin")


def _is_archive(url: str) -> bool:
    return urllib.parse.urlsplit(url).path.lower().endswith(ARCHIVES)


def _download(url: str, dest: Path, *, required: bool = True) -> bool:
    """Stream ``url`` into ``dest``; False when optional and absent (404 / no such file)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, \
                open(dest, "wb") as fh:
            shutil.copyfileobj(response, fh, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        missing = (isinstance(exc, urllib.error.HTTPError) and exc.code == 404) or \
            isinstance(getattr(exc, "reason", exc), FileNotFoundError)
        if missing and not required:
            return False
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"{url}: cannot download ({reason}); check the URL and the "
                              "network, or copy the checkpoint folder here and give its "
                              "path") from None
    return True


def _fetch_folder(url: str, tmp: Path) -> Path:
    base = url if url.endswith("/") else url + "/"
    folder = tmp / "checkpoint"
    folder.mkdir()
    for name in (CONFIG, WEIGHTS):
        _download(urllib.parse.urljoin(base, name), folder / name)
    for name in (CARD, SUMS):
        _download(urllib.parse.urljoin(base, name), folder / name, required=False)
    return folder


def _fetch_archive(url: str, tmp: Path) -> Path:
    archive = tmp / "archive"
    _download(url, archive)
    out = tmp / "extracted"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if Path(member).is_absolute() or ".." in Path(member).parts:
                        raise CheckpointError(f"{url}: archive member {member!r} points outside "
                                              "the archive; refused")
                zf.extractall(out)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(out, filter="data")  # no links out, no devices, no absolute paths
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{url}: not a readable checkpoint archive ({exc})") from None
    archive.unlink()
    candidates = sorted({p.parent for p in out.rglob(CONFIG)}, key=lambda p: len(p.parts))
    if not candidates:
        raise CheckpointError(f"{url}: the archive holds no {CONFIG}; not a GenBrain checkpoint")
    return candidates[0]
