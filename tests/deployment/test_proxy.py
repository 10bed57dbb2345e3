"""The centre's nginx front door: the generated configuration, and a real nginx in front of a stand-in SuperLink.

The stand-in is a small HTTPS server with the SuperLink's certificate that records what
reaches it, so these tests show what nginx forwards (only Fleet API calls, with the node
authentication headers unchanged, bodies up to the limit) without starting Flower.
"""

import http.client
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.errors import ConfigError
from fedtumor.deployment.processes import command_lines, free_port
from fedtumor.deployment.proxy import check_config, nginx_binary, refused_requests, start_proxy
from fedtumor.deployment.proxy_config import proxy_config, proxy_settings, write_proxy_config
from fedtumor.security.certs import make_superlink_certificates

needs_nginx = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (apt-get install -y nginx-light; .ci/run installs it)"
)
AUTH_HEADERS = {"flwr-public-key": "cHVibGlj", "flwr-signature": "c2lnbmVk", "flwr-timestamp": "2026-01-01T00:00:00"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_superlink_certificates(tmp_path_factory.mktemp("certs"), ["localhost"], ["127.0.0.1"])


class _StandInSuperLink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream pool expects

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), len(body)))
        reply = json.dumps({"path": self.path, "received": len(body)}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_GET = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


def _serve_https(cert_files) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandInSuperLink)
    server.seen = []  # (method, path, headers, body length) of every request that reached it
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_files.server_cert, cert_files.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def front_door(tmp_path, certs):
    """nginx (8 MB body limit) in front of a stand-in SuperLink; both stopped afterwards, nginx checked gone."""
    upstream = _serve_https(certs)
    settings = proxy_settings(
        "127.0.0.1",
        free_port(),
        f"127.0.0.1:{upstream.server_address[1]}",
        certs.ca_cert.parent,
        tmp_path / "proxy",
        listen_host="127.0.0.1",
        max_body_mb=8,
    )
    proxy = start_proxy(settings)
    try:
        yield settings, upstream
    finally:
        proxy.stop()
        upstream.shutdown()
    assert command_lines("nginx", str(tmp_path)) == {}


def _post(settings, certs, path, body=b"", method="POST", headers=None):
    """(status, body) of one raw request: the path goes out exactly as given, like `curl --path-as-is`."""
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", settings.public_port, context=context, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/protobuf", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    except (BrokenPipeError, ConnectionResetError):  # nginx may answer 413 and close before the body is sent
        return None, b""
    finally:
        connection.close()


def _log_soon(path, text, timeout_s=10.0):
    """The log's text once ``text`` is in it: nginx writes a refused upload's line when the connection ends."""
    deadline = time.monotonic() + timeout_s
    while text not in (content := path.read_text() if path.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    return content


@needs_nginx
def test_only_fleet_calls_reach_the_superlink(front_door, certs):
    settings, upstream = front_door
    status, body = _post(settings, certs, "/v1/fleet/pull-messages", b"x" * 100, headers=AUTH_HEADERS)
    assert status == 200 and json.loads(body) == {"path": "/v1/fleet/pull-messages", "received": 100}
    refused_paths = [
        "/v1/control/list-runs",
        "/v1/control/start-run",
        "/v1/control/register-node",
        "/v1/control/stream-logs",
        "/v1/fleet/../control/list-runs",
        "/v1/control/list-runs/../../fleet/get-run",  # nginx matches the normalised path but forwards the raw one
        "/v1/fleet/%2e%2e/control/list-runs",
        "/v1/fleet/get-run?next=/v1/control/list-runs",
        "/V1/fleet/get-run",
        "/docs",  # FastAPI's API browser on the SuperLink
        "/",
    ]
    for path in refused_paths:
        assert _post(settings, certs, path)[0] == 403, path
    assert _post(settings, certs, "/v1/fleet/get-run", method="GET")[0] == 403  # Fleet calls are POSTs
    # Exactly one request reached the SuperLink, with the node authentication headers as the SuperNode sent them.
    assert [(method, path) for method, path, _, _ in upstream.seen] == [("POST", "/v1/fleet/pull-messages")]
    headers = {name.lower(): value for name, value in upstream.seen[0][2].items()}
    assert {name: headers.get(name) for name in AUTH_HEADERS} == AUTH_HEADERS
    assert headers["x-forwarded-for"] == "127.0.0.1"
    # nginx logs a request after it has answered it: wait for the last line before counting.
    deadline = time.monotonic() + 10
    while len(refused := refused_requests(settings)) < len(refused_paths) + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(refused) == len(refused_paths) + 1 and all(" 403 " in line and "upstream=-" in line for line in refused)
    assert any('"POST /v1/control/list-runs HTTP/1.1" 403' in line for line in refused)


@needs_nginx
def test_model_sized_bodies_pass_and_oversized_ones_do_not(front_door, certs):
    settings, upstream = front_door
    status, body = _post(settings, certs, "/v1/fleet/push-object", b"w" * (6 * MiB))
    assert status == 200 and json.loads(body)["received"] == 6 * MiB
    assert _post(settings, certs, "/v1/fleet/push-object", b"w" * (9 * MiB))[0] in (413, None)
    assert [length for *_, length in upstream.seen] == [6 * MiB]  # the oversized body never reached it
    assert "client intended to send too large body" in _log_soon(settings.error_log, "too large body")


@needs_nginx
def test_a_superlink_with_another_certificate_is_not_trusted(tmp_path, certs):
    impostor = _serve_https(make_superlink_certificates(tmp_path / "other-ca", ["localhost"], ["127.0.0.1"]))
    settings = proxy_settings(
        "127.0.0.1",
        free_port(),
        f"127.0.0.1:{impostor.server_address[1]}",
        certs.ca_cert.parent,
        tmp_path / "proxy",
        listen_host="127.0.0.1",
    )
    proxy = start_proxy(settings)
    try:
        assert _post(settings, certs, "/v1/fleet/pull-messages")[0] == 502  # nginx checks it with the centre's CA
    finally:
        proxy.stop()
        impostor.shutdown()
    assert impostor.seen == []
    assert "upstream SSL certificate verify error" in settings.error_log.read_text()


@needs_nginx
def test_allow_admits_only_the_hospitals_addresses(tmp_path, certs):
    upstream = _serve_https(certs)
    common = dict(listen_host="127.0.0.1", allow=["203.0.113.0/24"])
    settings = proxy_settings(
        "127.0.0.1", free_port(), f"127.0.0.1:{upstream.server_address[1]}", certs.ca_cert.parent, tmp_path, **common
    )
    proxy = start_proxy(settings)
    try:
        assert _post(settings, certs, "/v1/fleet/pull-messages")[0] == 403  # 127.0.0.1 is not a hospital
    finally:
        proxy.stop()
        upstream.shutdown()
    assert upstream.seen == []


@needs_nginx
def test_cli_writes_a_config_that_nginx_accepts(tmp_path):
    certs_dir = tmp_path / "certs"
    make_superlink_certificates(certs_dir, ["superlink.example.org"], ["203.0.113.10"])
    out = tmp_path / "proxy" / "nginx.conf"
    result = CliRunner().invoke(
        app,
        ["centre", "proxy-config", "--public-host", "superlink.example.org", "--public-port", "443"]
        + ["--superlink", "127.0.0.1:9093", "--certs", str(certs_dir), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    settings = proxy_settings("superlink.example.org", 443, "127.0.0.1:9093", certs_dir, out.parent)
    assert check_config(out, settings) is None  # `nginx -t`
    assert f'ssl_certificate "{certs_dir / "server.pem"}";' in text
    assert f'ssl_certificate_key "{certs_dir / "server.key"}";' in text
    assert f'proxy_ssl_trusted_certificate "{certs_dir / "ca.crt"}";' in text
    assert "proxy_ssl_verify on;" in text and "proxy_ssl_name superlink.example.org;" in text
    assert "listen 0.0.0.0:443 ssl;" in text and "server 127.0.0.1:9093;" in text
    # One forwarding rule, for the Fleet API; everything else is answered 403.
    assert text.count("proxy_pass ") == 1 and "location ~ ^/v1/fleet/[a-z0-9-]+$ {" in text
    assert "location / {\n            return 403;" in text
    assert "client_max_body_size 256m;" in text
    assert "/var/" not in text and "/etc/" not in text  # nothing in root-owned system folders


def test_the_config_text_follows_the_settings(tmp_path, certs):
    settings = proxy_settings(
        "localhost", 8443, "127.0.0.1:9093", certs.ca_cert.parent, tmp_path, allow=["10.1.0.0/16"], max_body_mb=64
    )
    text = proxy_config(settings)
    assert "allow 10.1.0.0/16;\n            deny all;" in text and "client_max_body_size 64m;" in text
    assert f'pid "{tmp_path / "nginx.pid"}";' in text and f'"{tmp_path / "logs" / "refused.log"}"' in text


def test_a_refused_config_replaces_nothing(tmp_path, certs):
    out = tmp_path / "nginx.conf"
    out.write_text("the working one")
    settings = proxy_settings("localhost", 8443, "127.0.0.1:9093", certs.ca_cert.parent, tmp_path)
    with pytest.raises(ConfigError, match="nginx refused the configuration"):
        write_proxy_config(settings, out, overwrite=True, check=lambda path: "unknown directive")
    assert out.read_text() == "the working one" and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "nginx.conf"
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--superlink": "10.0.0.5:9093"}, "--superlink '10.0.0.5:9093' must be a loopback address"),
        ({"--superlink": "127.0.0.1"}, "--superlink '127.0.0.1' is not HOST:PORT"),
        ({"--public-host": "other.example.org"}, "--public-host 'other.example.org' is not a name in"),
        ({"--public-port": "70000"}, "--public-port 70000 is not a TCP port"),
        ({"--public-port": "9093"}, "is the SuperLink's own port"),
        ({"--certs": "missing"}, "is not a folder; make it with `fedtumor certs"),
        ({"--allow": "hospitals"}, "--allow 'hospitals' is not an IP address or CIDR range"),
        ({"--max-body-mb": "0"}, "--max-body-mb 0 must be between 1 and 4096"),
        ({"--out": "existing.conf"}, "already exists; give --force"),
        ({"--out": 'my"conf'}, "cannot contain quotes"),
    ],
)
def test_bad_arguments_are_one_line_errors_and_overwrite_nothing(tmp_path, certs, change, message):
    (tmp_path / "existing.conf").write_text("keep me")
    options = {
        "--public-host": "localhost",
        "--public-port": "8443",
        "--superlink": "127.0.0.1:9093",
        "--certs": str(certs.ca_cert.parent),
        "--out": "nginx.conf",
        "--listen": "127.0.0.1",
    }
    options.update(change)
    for key in ("--certs", "--out"):
        options[key] = str(tmp_path / options[key])
    result = CliRunner().invoke(app, ["centre", "proxy-config", *[item for pair in options.items() for item in pair]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert (tmp_path / "existing.conf").read_text() == "keep me"
    assert not (tmp_path / "nginx.conf").exists()
