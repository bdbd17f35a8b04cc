"""Pretrained weights through the real download code, against an HTTP server on 127.0.0.1 started here.

Nothing is mocked but the address: torchvision's weights entry gets a loopback URL, the Hugging Face
hub is pointed at the loopback server with HF_ENDPOINT, and both caches live in tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub  # noqa: F401 - before any test turns offline mode on: it reads HF_HUB_OFFLINE once
import pytest
import torch

from core.errors import CheckpointError
from core.training import models, weights


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches; one thread; network switches as the test sets them."""
    before_hub, before_threads = torch.hub.get_dir(), torch.get_num_threads()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # is_offline() sets it; undone after the test
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when it was imported (the suite runs with WORKBENCH_OFFLINE=1,
    # which sets it): these tests decide the network switch themselves, so reset the hub's own copy.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield
    torch.hub.set_dir(before_hub)
    torch.set_num_threads(before_threads)


class WeightsServer:
    """Serves ``files`` (path -> bytes) like a plain web server and the Hugging Face hub's resolve URLs."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_short: set[str] = set()  # paths whose body stops before the announced Content-Length
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool):
                server.requests.append((self.command, self.path))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                announced = len(data) + (1000 if self.path in server.cut_short else 0)
                self.send_header("Content-Length", str(announced))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", server.COMMIT)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = WeightsServer()
    yield srv
    srv.close()


def saved(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def serve_pth(server: WeightsServer, stem: str, data: bytes) -> str:
    """Publish ``data`` under a torch.hub-style name carrying its sha256 prefix; returns the URL."""
    path = f"/models/{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files[path] = data
    return server.url + path


# ---- torchvision's mechanism: a URL into the torch hub cache ----------------------------------------------


def test_download_reports_progress_lands_in_the_hub_cache_and_is_reused(server, monkeypatch):
    monkeypatch.setattr(weights, "CHUNK_BYTES", 4096)  # several chunks from a small file: several progress lines
    data = saved({"w": torch.arange(20_000, dtype=torch.float32)})
    fake = SimpleNamespace(url=serve_pth(server, "tiny", data))  # what a torchvision Weights entry offers
    lines: list[str] = []

    path = weights.torchvision_weights_file(fake, "tiny weights", lines.append)

    assert path == Path(torch.hub.get_dir()) / "checkpoints" / Path(fake.url).name
    assert path.read_bytes() == data
    assert any("downloading" in line and fake.url in line for line in lines)
    assert sum("%" in line for line in lines) >= 3
    assert "downloaded" in lines[-1]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]
    requests_before = len(server.requests)
    lines.clear()
    assert weights.torchvision_weights_file(fake, "tiny weights", lines.append) == path
    assert len(server.requests) == requests_before  # the cache answered: no request at all
    assert "cached" in lines[0]


def test_a_missing_file_on_the_server_names_url_file_and_folder(server):
    fake = SimpleNamespace(url=server.url + "/models/gone-1234abcd.pth")
    with pytest.raises(CheckpointError) as err:
        weights.torchvision_weights_file(fake, "gone weights", lambda line: None)
    message = str(err.value)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    assert "HTTP 404" in message and fake.url in message
    assert "gone-1234abcd.pth" in message and str(folder) in message
    assert not list(folder.glob("*"))  # nothing half-written left behind


def test_a_closed_port_fails_at_once_with_the_advice():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    fake = SimpleNamespace(url=f"http://127.0.0.1:{port}/w/net-0badc0de.pth")
    with pytest.raises(CheckpointError, match=r"cannot download .*net-0badc0de\.pth.*put it into"):
        weights.torchvision_weights_file(fake, "net weights", lambda line: None)


def test_a_server_that_never_answers_times_out_instead_of_hanging(monkeypatch):
    monkeypatch.setattr(weights, "TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel does) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        fake = SimpleNamespace(url=f"http://127.0.0.1:{silent.getsockname()[1]}/w/slow-0badc0de.pth")
        with pytest.raises(CheckpointError, match="timed out"):
            weights.torchvision_weights_file(fake, "slow weights", lambda line: None)


def test_a_damaged_download_is_refused_and_not_cached(server):
    data = saved({"w": torch.ones(3)})
    server.files["/models/bad-00000000.pth"] = data  # the hash in the name does not match the bytes
    fake = SimpleNamespace(url=server.url + "/models/bad-00000000.pth")
    with pytest.raises(CheckpointError, match="damaged"):
        weights.torchvision_weights_file(fake, "bad weights", lambda line: None)
    assert not (Path(torch.hub.get_dir()) / "checkpoints" / "bad-00000000.pth").exists()


def test_a_connection_cut_mid_download_leaves_nothing_in_the_cache(server):
    fake = SimpleNamespace(url=serve_pth(server, "cut", saved({"w": torch.ones(1000)})))
    server.cut_short.add(fake.url.removeprefix(server.url))
    with pytest.raises(CheckpointError, match="cannot download|damaged"):
        weights.torchvision_weights_file(fake, "cut weights", lambda line: None)
    assert not list((Path(torch.hub.get_dir()) / "checkpoints").iterdir())


def test_offline_mode_never_touches_the_network(server, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    fake = SimpleNamespace(url=serve_pth(server, "tiny", saved({"w": torch.ones(2)})))
    with pytest.raises(CheckpointError) as err:
        weights.torchvision_weights_file(fake, "tiny weights", lambda line: None)
    assert server.requests == []
    assert "WORKBENCH_OFFLINE=1" in str(err.value) and Path(fake.url).name in str(err.value)


def test_a_torchvision_backbone_downloads_its_weights_and_gets_a_new_head(server, monkeypatch):
    torch.manual_seed(0)
    published = models.build_model("squeezenet1_1", 1000).state_dict()  # the ImageNet layout of the file
    default = models.torchvision_default_weights("squeezenet1_1")
    monkeypatch.setattr(default.value, "url", serve_pth(server, "squeezenet1_1", saved(published)))
    lines: list[str] = []

    model = models.build_model("squeezenet1_1", 4, pretrained=True, progress=lines.append)

    state = model.state_dict()
    torch.testing.assert_close(state["features.0.weight"], published["features.0.weight"])
    assert state[models.head_weight_key(model)].shape[0] == 4  # squeezenet's 1x1-convolution head, replaced
    assert any("downloaded" in line for line in lines)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")  # the cached file loads without any network
    requests_before = len(server.requests)
    models.build_model("squeezenet1_1", 4, pretrained=True, progress=lines.append)
    assert len(server.requests) == requests_before


# ---- timm's mechanism: the Hugging Face hub cache ------------------------------------------------------------


def published_test_vit() -> dict:
    torch.manual_seed(1)
    return models.build_model("timm:test_vit", 1000).state_dict()


def safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def test_a_timm_backbone_downloads_through_the_hub_cache_then_works_offline(server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    published = published_test_vit()
    cfg = models.timm_pretrained_cfg("timm:test_vit")
    server.files[f"/{cfg.hf_hub_id}/resolve/main/model.safetensors"] = safetensors_bytes(published)
    lines: list[str] = []

    model = models.build_model("timm:test_vit", 3, pretrained=True, progress=lines.append)

    torch.testing.assert_close(model.state_dict()["patch_embed.proj.weight"], published["patch_embed.proj.weight"])
    assert model.get_classifier().out_features == 3
    assert any("Hugging Face cache" in line for line in lines) and "downloaded" in lines[-1]
    assert weights.timm_cached_file(cfg) is not None
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    requests_before = len(server.requests)
    again = models.build_model("timm:test_vit", 3, pretrained=True, progress=lines.append)
    assert len(server.requests) == requests_before
    torch.testing.assert_close(again.state_dict()["patch_embed.proj.weight"], published["patch_embed.proj.weight"])


def test_timm_weights_missing_on_the_hub_say_where_to_put_them(server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    with pytest.raises(CheckpointError) as err:
        models.build_model("timm:test_vit", 3, pretrained=True, progress=lambda line: None)
    assert "none of model.safetensors, pytorch_model.bin" in str(err.value)


def test_timm_offline_names_the_url_and_the_hand_put_file(server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(CheckpointError) as err:
        models.build_model("timm:test_vit", 3, pretrained=True, progress=lambda line: None)
    message = str(err.value)
    assert server.requests == []
    assert "test_vit.r160_in1k.safetensors" in message
    assert str(Path(torch.hub.get_dir()) / "checkpoints" / "timm") in message
    assert f"{server.url}/timm/test_vit.r160_in1k/resolve/main/model.safetensors" in message


def test_a_hand_put_timm_file_loads_without_network(server, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    published = published_test_vit()
    folder = Path(torch.hub.get_dir()) / "checkpoints" / "timm"
    folder.mkdir(parents=True)
    (folder / "test_vit.r160_in1k.safetensors").write_bytes(safetensors_bytes(published))
    model = models.build_model("timm:test_vit", 5, pretrained=True, progress=lambda line: None)
    torch.testing.assert_close(model.state_dict()["cls_token"], published["cls_token"])
    assert server.requests == []


def test_an_unreadable_weights_file_is_reported_not_loaded():
    path = Path(torch.hub.get_dir()) / "checkpoints" / "junk.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read pretrained weights"):
        weights.read_state_dict(path, "junk")
