"""Pretrained weights: fetched the way torchvision and timm fetch them, into the libraries' own caches.

Where the files live (the libraries' caches, so a notebook using torchvision or timm shares them):

- torchvision weights, and timm weights published only as a URL: ``<torch hub dir>/checkpoints/<file name
  of the URL>`` (``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``). The hash
  prefix in the file name (``resnet18-f37072fd.pth``) is checked after a download, as torch.hub does.
- timm weights on the Hugging Face hub: the hub cache (``$HF_HUB_CACHE``, by default
  ``~/.cache/huggingface/hub``) through ``huggingface_hub.hf_hub_download``.
- timm weights put there by hand: ``<torch hub dir>/checkpoints/timm/<model>.safetensors`` (or ``.pth``).

A download is tried once, with a socket timeout of ``TIMEOUT_S`` per connect/read: behind a firewall
that drops packets the job fails after about that long with one CheckpointError naming the URL, the
file and the folder to put it in by hand. No retries: a user waiting on a job log wants the advice,
not a minute of back-off. ``WORKBENCH_OFFLINE=1`` never touches the network (and sets
``HF_HUB_OFFLINE`` for timm and huggingface_hub). Files in the caches load without any network.

Progress goes to a ``progress(line)`` callback as whole lines (a job log is a file, not a terminal).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import CheckpointError

OFFLINE_ENV = "WORKBENCH_OFFLINE"
TIMEOUT_S = 15.0  # per connect/read; one attempt, so a dead network fails the job in ~15-30 s
CHUNK_BYTES = 1 << 20
UNSIZED_REPORT_BYTES = 16 << 20  # a progress line this often when the server gives no size
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: resnet18-f37072fd.pth -> sha256 prefix
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for on the hub, in order
MANUAL_SUFFIXES = (".safetensors", ".pth")

Progress = Callable[[str], None]


def say(line: str) -> None:
    """The default progress sink: stdout, flushed (a job's stdout is its log)."""
    print(line, flush=True)


def is_offline() -> bool:
    """Whether WORKBENCH_OFFLINE forbids any download (then timm and huggingface_hub are told too)."""
    offline = os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if offline and "huggingface_hub" not in sys.modules:
        # huggingface_hub reads HF_HUB_OFFLINE once, on import: set it before timm imports it. A process that
        # imported it already keeps its mode (changing the variable now would do nothing but outlive this call).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return offline


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_checkpoints_dir() -> Path:
    """torch.hub's checkpoint folder, where torchvision (and timm's URL weights) cache files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def url_file(url: str) -> Path:
    """Where torch.hub keeps the file of ``url`` (``load_state_dict_from_url``'s naming)."""
    return hub_checkpoints_dir() / Path(urllib.request.urlparse(url).path).name


# ---- torchvision (and any plain URL) -------------------------------------------------------------------


def torchvision_weights_file(weights: Any, what: str, progress: Progress | None = None) -> Path:
    """The cached file of a torchvision ``Weights`` entry (anything with ``.url``), downloaded if needed.

    The URL comes from the weights object, so tests pass one whose URL points at a loopback server.
    """
    return fetch_url(weights.url, what, progress)


def fetch_url(url: str, what: str, progress: Progress | None = None, timeout: float | None = None) -> Path:
    """``url``'s file in the torch hub cache: from the cache, else downloaded once (never when offline)."""
    progress = progress or say
    dest = url_file(url)
    if dest.is_file():
        progress(f"{what}: using the cached {dest}")
        return dest
    if is_offline():
        raise CheckpointError(_offline_message(what, url, dest.name, dest.parent))
    _download(url, dest, what, progress, TIMEOUT_S if timeout is None else timeout)
    return dest


def _download(url: str, dest: Path, what: str, progress: Progress, timeout: float) -> None:
    """Stream ``url`` into a temp file beside ``dest``, check torch.hub's hash prefix, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    sha, start = hashlib.sha256(), time.monotonic()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "workbench"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            progress(f"{what}: downloading {url} into {dest.parent} ({_mb(total)})")
            done, step = 0, (total // 10 if total else UNSIZED_REPORT_BYTES)
            next_line_at = step
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if done >= next_line_at:
                    share = f"{100 * done // total}% ({_mb(done)} of {_mb(total)})" if total else f"{_mb(done)} so far"
                    progress(f"{what}: {share}")
                    next_line_at = done + step
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        OSError,
        ValueError,
    ) as err:  # refused, DNS, timeout, HTTP errors
        tmp.unlink(missing_ok=True)
        raise CheckpointError(_unreachable_message(what, url, dest.name, dest.parent, _reason(err))) from err
    expected = HASH_IN_NAME.search(dest.name)
    if (total and done != total) or (expected and not sha.hexdigest().startswith(expected.group(1))):
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"{what}: the file downloaded from {url} is damaged ({_mb(done)} of {_mb(total)}, sha256 "
            f"{sha.hexdigest()[:8]}…); try again, or put {dest.name} into {dest.parent} by hand"
        )
    os.replace(tmp, dest)
    progress(f"{what}: downloaded {dest.name} ({_mb(done)} in {time.monotonic() - start:.1f} s)")


# ---- timm: the Hugging Face hub cache --------------------------------------------------------------------


def timm_manual_file(full_name: str) -> Path | None:
    """A weights file put by hand for timm model ``arch.tag``, if there is one."""
    folder = hub_checkpoints_dir() / "timm"
    return next((folder / f"{full_name}{s}" for s in MANUAL_SUFFIXES if (folder / f"{full_name}{s}").is_file()), None)


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _hf_files(cfg: Any) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_WEIGHT_FILES


def timm_cached_file(cfg: Any) -> Path | None:
    """The weights of timm pretrained config ``cfg`` already on this machine (hand-put or cached), else None."""
    manual = timm_manual_file(f"{cfg.architecture}.{cfg.tag}")
    if manual:
        return manual
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in _hf_files(cfg):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=hf_cache_dir())
            if isinstance(found, str):
                return Path(found)
        return None
    return url_file(cfg.url) if cfg.url and url_file(cfg.url).is_file() else None


def timm_weights_file(cfg: Any, what: str, progress: Progress | None = None) -> Path:
    """The weights file of timm pretrained config ``cfg``: cached, or fetched through the hub (or its URL)."""
    progress = progress or say
    cached = timm_cached_file(cfg)
    if cached:
        progress(f"{what}: using the cached {cached}")
        return cached
    if not cfg.hf_hub_id:
        if not cfg.url:
            raise CheckpointError(f"{what}: timm publishes no weights for {cfg.architecture}.{cfg.tag}")
        return fetch_url(cfg.url, what, progress)
    manual_dir = hub_checkpoints_dir() / "timm"
    manual_name = f"{cfg.architecture}.{cfg.tag}{Path(_hf_files(cfg)[0]).suffix}"
    url = _hf_url(cfg.hf_hub_id, _hf_files(cfg)[0])
    if is_offline() or _hf_offline():
        raise CheckpointError(_offline_message(what, url, manual_name, manual_dir, "or HF_HUB_OFFLINE=1 "))
    for filename in _hf_files(cfg):
        url = _hf_url(cfg.hf_hub_id, filename)
        status = _probe(url)  # one quick request: hf_hub_download would retry a dead network for minutes
        if status == 404:
            continue
        if not (isinstance(status, int) and 200 <= status < 300):
            raise CheckpointError(_unreachable_message(what, url, manual_name, manual_dir, str(status)))
        return _hf_download(cfg.hf_hub_id, filename, what, progress, url, manual_name, manual_dir)
    raise CheckpointError(f"{what}: none of {', '.join(_hf_files(cfg))} exists at {_hf_url(cfg.hf_hub_id, '')}")


def _hf_url(repo_id: str, filename: str) -> str:
    return f"{hf_endpoint()}/{repo_id}/resolve/main/{filename}"


def _probe(url: str) -> int | str:
    """The HTTP status of a HEAD request (redirects followed), or why there was none."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "workbench"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code) if err.code == 404 else _reason(err)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        return _reason(err)


def _hf_download(repo_id: str, filename: str, what: str, progress: Progress, url: str, name: str, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    progress(f"{what}: downloading {url} into the Hugging Face cache {hf_cache_dir()}")
    start = time.monotonic()
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            endpoint=hf_endpoint(),
            cache_dir=hf_cache_dir(),
            etag_timeout=TIMEOUT_S,
            tqdm_class=_line_progress_class(what, progress),
        )
    except Exception as err:  # noqa: BLE001 - httpx, hub and OS errors alike: the same advice
        raise CheckpointError(_unreachable_message(what, url, name, folder, _reason(err))) from err
    progress(f"{what}: downloaded {filename} ({_mb(Path(path).stat().st_size)} in {time.monotonic() - start:.1f} s)")
    return Path(path)


def _line_progress_class(what: str, progress: Progress) -> type:
    """A tqdm class for huggingface_hub that reports every 10% as a line instead of drawing a bar."""
    from tqdm import tqdm

    class _Discard:
        def write(self, _text: str) -> None:
            pass

        def flush(self) -> None:
            pass

    class LineProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(file=_Discard(), disable=False)
            super().__init__(*args, **kwargs)
            self._next_report = 0.1

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.total and self.n / self.total >= self._next_report:
                progress(f"{what}: {int(100 * self.n // self.total)}% ({_mb(self.n)} of {_mb(self.total)})")
                self._next_report = self.n / self.total + 0.1
            return shown

    return LineProgress


# ---- reading and messages --------------------------------------------------------------------------------


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """Tensors of a .safetensors file, or of a .pth/.bin loaded with weights_only (pickled code refused)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated download, a pickle carrying code: the same advice
        raise CheckpointError(
            f"{path}: cannot read pretrained weights for {what} ({err}); delete it and download it again"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # some published .pth files wrap the weights
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state_dict; delete it and download it again")
    return state


def _offline_message(what: str, url: str, filename: str, folder: Path, also: str = "") -> str:
    return (
        f"{what}: not in the local cache, and {OFFLINE_ENV}=1 {also}forbids downloading. "
        f"Put {filename} (from {url}) into {folder}, or untick pretrained weights"
    )


def _unreachable_message(what: str, url: str, filename: str, folder: Path, reason: str) -> str:
    return (
        f"{what}: cannot download {url} ({reason}). Without network access (proxy, firewall), fetch that file "
        f"elsewhere and put it into {folder} as {filename}, or untick pretrained weights "
        f"(set {OFFLINE_ENV}=1 to never try the network)"
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _mb(n: float) -> str:
    if not n:
        return "size unknown"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
