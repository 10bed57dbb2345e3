"""The coordinating centre's front door: an nginx configuration that lets only SuperNodes through.

Flower 1.41 serves the Fleet API (SuperNodes, ``/v1/fleet/...``), the Control API (``flwr
run``, ``ls``, ``log``, ``supernode register``; ``/v1/control/...``) and the Runtime API on one
HTTPS port, and the open-source Control API has no account authentication. So the SuperLink
listens on 127.0.0.1 only, and nginx terminates TLS on the public address and forwards only
Fleet API calls to it. Everything else gets 403 and a line in ``logs/refused.log``.

The SuperLink keeps TLS on the loopback hop too: Flower refuses ``--enable-supernode-auth``
without it, and nginx checks the SuperLink's certificate against the centre's CA there.
Node authentication passes through unchanged: it lives in the ``flwr-public-key``,
``flwr-signature`` and ``flwr-timestamp`` request headers, which nginx forwards as they are.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedtumor.core.errors import ConfigError
from fedtumor.security.certs import CA_CERT, SERVER_CERT, SERVER_KEY, read_certificate, subject_alternative_names

FLEET_PREFIX = "/v1/fleet/"
# A Fleet call is one POST to /v1/fleet/<method>; the raw request line must match too, so
# "/v1/fleet/../control/..." or percent-encoded tricks never reach the SuperLink.
FLEET_PATH_PATTERN = r"^/v1/fleet/[a-z0-9-]+$"
DEFAULT_MAX_BODY_MB = 256  # Flower sends arrays in chunks of 5 MiB; this is headroom, and still a bound
TIMEOUT_S = 300  # a slow hospital link uploading a chunk; Fleet calls are unary (no long-lived streams)
_LOOPBACK_NAMES = {"localhost"}
_UNSAFE_IN_CONFIG = re.compile(r'["\\$;{}\n\r]')


@dataclass(frozen=True)
class ProxySettings:
    """What the generated nginx configuration needs; :func:`proxy_settings` checks every field."""

    public_host: str  # the name hospitals reach the centre by; must be in server.pem
    public_port: int
    superlink_host: str  # the SuperLink's loopback listener
    superlink_port: int
    superlink_name: str  # the name nginx checks the SuperLink's certificate against
    ca_cert: Path
    server_cert: Path
    server_key: Path
    state_dir: Path  # pid file, logs/ and tmp/: nothing in root-owned system folders
    log_dir: Path | None = None  # default: state_dir/logs
    listen_host: str = "0.0.0.0"
    allow: tuple[str, ...] = field(default_factory=tuple)  # CIDRs allowed to reach the Fleet API; empty: all
    max_body_mb: int = DEFAULT_MAX_BODY_MB

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "nginx.pid"

    @property
    def logs(self) -> Path:
        return self.log_dir or self.state_dir / "logs"

    @property
    def error_log(self) -> Path:
        return self.logs / "error.log"

    @property
    def access_log(self) -> Path:
        return self.logs / "access.log"

    @property
    def refused_log(self) -> Path:
        return self.logs / "refused.log"

    @property
    def temp_dir(self) -> Path:
        return self.state_dir / "tmp"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(text: str, option: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); a one-line ConfigError naming ``option`` otherwise."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", text.strip())
    port = int(match.group(2) or match.group(4)) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ConfigError(f"{option} {text!r} is not HOST:PORT (e.g. 127.0.0.1:9093)")
    return match.group(1) or match.group(3), port


def _check_port(port: int, option: str) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option} {port} is not a TCP port (1-65535)")
    return port


def _config_path(path: Path, what: str) -> Path:
    path = Path(path).expanduser().absolute()
    if _UNSAFE_IN_CONFIG.search(str(path)):
        raise ConfigError(f"{what} {str(path)!r} cannot contain quotes, backslashes, '$', ';', braces or newlines")
    return path


def _readable_file(path: Path, what: str) -> Path:
    path = _config_path(path, what)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; make it with `fedtumor certs`")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what} {path} is not readable")
    return path


def proxy_settings(
    public_host: str,
    public_port: int,
    superlink: str,
    certs_dir: Path,
    state_dir: Path,
    listen_host: str = "0.0.0.0",
    allow: list[str] = (),
    max_body_mb: int = DEFAULT_MAX_BODY_MB,
    log_dir: Path | None = None,
) -> ProxySettings:
    """Check the arguments against each other and the certificate files; one-line ConfigErrors."""
    superlink_host, superlink_port = parse_host_port(superlink, "--superlink")
    if not _is_loopback(superlink_host):
        raise ConfigError(
            f"--superlink {superlink!r} must be a loopback address (127.0.0.1:PORT): on any other address "
            "the Control API is reachable without the proxy"
        )
    _check_port(public_port, "--public-port")
    if (listen_host, public_port) == (superlink_host, superlink_port):
        raise ConfigError(f"--public-port {public_port} is the SuperLink's own port; give the proxy another one")
    try:
        ipaddress.ip_address(listen_host)
    except ValueError:
        raise ConfigError(f"--listen {listen_host!r} is not an IP address (0.0.0.0 for every interface)") from None
    if not 1 <= max_body_mb <= 4096:
        raise ConfigError(f"--max-body-mb {max_body_mb} must be between 1 and 4096")
    for network in allow:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"--allow {network!r} is not an IP address or CIDR range (e.g. 203.0.113.0/24)") from None
    certs_dir = Path(certs_dir).expanduser()
    if not certs_dir.is_dir():
        raise ConfigError(f"--certs {certs_dir} is not a folder; make it with `fedtumor certs --out {certs_dir}`")
    ca_cert = _readable_file(certs_dir / CA_CERT, "CA certificate")
    server_cert = _readable_file(certs_dir / SERVER_CERT, "server certificate")
    server_key = _readable_file(certs_dir / SERVER_KEY, "server key")
    names = subject_alternative_names(read_certificate(server_cert))
    if public_host not in names:
        raise ConfigError(
            f"--public-host {public_host!r} is not a name in {server_cert} ({', '.join(names) or 'none'}); "
            f"hospitals' TLS checks would fail: remake it with `fedtumor certs --host {public_host}`"
        )
    # nginx checks the upstream certificate by DNS name only, so prefer a DNS name from server.pem.
    dns_names = [name for name in names if not _is_ip(name)]
    superlink_name = public_host if not _is_ip(public_host) else (dns_names[0] if dns_names else "")
    if not superlink_name:
        raise ConfigError(
            f"{server_cert} names only IP addresses; nginx verifies the SuperLink's certificate by DNS name: "
            "remake it with `fedtumor certs --host NAME` (e.g. --host localhost)"
        )
    return ProxySettings(
        public_host=public_host,
        public_port=public_port,
        superlink_host=superlink_host,
        superlink_port=superlink_port,
        superlink_name=superlink_name,
        ca_cert=ca_cert,
        server_cert=server_cert,
        server_key=server_key,
        state_dir=_config_path(state_dir, "--state-dir"),
        log_dir=_config_path(log_dir, "log folder") if log_dir else None,
        listen_host=listen_host,
        allow=tuple(allow),
        max_body_mb=max_body_mb,
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_config(settings: ProxySettings) -> str:
    """The whole nginx.conf text: run it with ``nginx -c FILE -e ERROR_LOG``; no include of system files."""
    s = settings
    allow = "".join(f"            allow {network};\n" for network in s.allow)
    allow += "            deny all;\n" if s.allow else ""
    public, superlink = _address(s.public_host, s.public_port), _address(s.superlink_host, s.superlink_port)
    return f"""# Written by `fedtumor centre proxy-config`; regenerate it instead of editing it.
# Public: https://{public} -> the SuperLink's Fleet API on {superlink}
# Only POST {FLEET_PREFIX}<method> is forwarded; everything else (the Control API included) gets 403.
worker_processes 1;
pid "{s.pid_file}";
error_log "{s.error_log}" warn;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    client_body_temp_path "{s.temp_dir}/client_body";
    proxy_temp_path "{s.temp_dir}/proxy";
    fastcgi_temp_path "{s.temp_dir}/fastcgi";
    uwsgi_temp_path "{s.temp_dir}/uwsgi";
    scgi_temp_path "{s.temp_dir}/scgi";

    # time: the whole request at nginx; upstream_time: the SuperLink's share (the proxy adds the rest).
    log_format fleet '$remote_addr [$time_iso8601] "$request" $status '
                     'in=$request_length out=$body_bytes_sent time=$request_time '
                     'upstream=$upstream_addr upstream_time=$upstream_response_time';
    map $status $refused {{
        403 1;
        default 0;
    }}
    access_log "{s.access_log}" fleet;
    access_log "{s.refused_log}" fleet if=$refused;

    upstream superlink {{
        server {superlink};
        keepalive 16;
    }}

    server {{
        listen {_address(s.listen_host, s.public_port)} ssl;
        server_name {s.public_host};

        ssl_certificate "{s.server_cert}";
        ssl_certificate_key "{s.server_key}";
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:fleet_tls:10m;

        # Model weights: Flower sends arrays in chunks of at most 5 MiB; the limit bounds one request.
        client_max_body_size {s.max_body_mb}m;
        client_body_timeout {TIMEOUT_S}s;
        send_timeout {TIMEOUT_S}s;

        location ~ {FLEET_PATH_PATTERN} {{
            # Location matching uses the normalised path; check the raw one the SuperLink will see too.
            if ($request_uri !~ "{FLEET_PATH_PATTERN}") {{
                return 403;
            }}
            limit_except POST {{
                deny all;
            }}
{allow}            proxy_pass https://superlink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            # Stream bodies both ways: no temporary files for model weights, no added latency.
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_connect_timeout 10s;
            proxy_send_timeout {TIMEOUT_S}s;
            proxy_read_timeout {TIMEOUT_S}s;

            # The loopback hop keeps TLS; nginx checks the SuperLink's certificate with the CA.
            proxy_ssl_trusted_certificate "{s.ca_cert}";
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name {s.superlink_name};
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;
        }}

        location / {{
            return 403;
        }}
    }}
}}
"""


def write_proxy_config(
    settings: ProxySettings,
    out: Path,
    overwrite: bool = False,
    check: Callable[[Path], str | None] | None = None,
) -> Path:
    """Write the configuration and create its state folders; an existing file is kept unless ``overwrite``.

    ``check`` (e.g. ``nginx -t``) sees the new file before it replaces anything; its complaint is a ConfigError.
    """
    out = _config_path(out, "--out")
    if out.exists() and (out.is_dir() or not overwrite):
        raise ConfigError(
            f"--out {out} already exists; give --force to replace it"
            if out.is_file()
            else f"--out {out} is a folder; give a file name such as {out / 'nginx.conf'}"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for folder in (settings.logs, settings.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.tmp")
        temporary.write_text(proxy_config(settings))
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    if check is not None and (problem := check(temporary)):
        temporary.unlink()
        raise ConfigError(f"nginx refused the configuration for {out}: {problem}")
    temporary.replace(out)  # never a half-written or refused config in place
    return out
