"""Run nginx as the centre's front door: check a generated configuration, start it, read its refusals.

The configuration itself comes from :mod:`fedtumor.deployment.proxy_config`. Here nginx runs
in the foreground (``daemon off``) under :class:`ManagedProcess`, with its pid file, logs and
temporary files in the settings' state folder, so a test or the loopback federation can run it
without root and stop it with everything else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from fedtumor.deployment.processes import ManagedProcess
from fedtumor.deployment.proxy_config import ProxySettings, write_proxy_config

INSTALL_HINT = "install it with `apt-get install -y nginx-light` (Debian/Ubuntu; or your system's nginx package)"
NGINX_ENV = "FEDTUMOR_NGINX"  # an nginx executable outside the usual places
_SYSTEM_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
START_TIMEOUT_S = 20.0


def nginx_binary() -> str | None:
    """The nginx executable: $FEDTUMOR_NGINX, else on PATH or where packages put it (/usr/sbin is not
    on every user's PATH); None when there is none."""
    if chosen := os.environ.get(NGINX_ENV):
        return chosen if os.access(chosen, os.X_OK) and Path(chosen).is_file() else None
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in _SYSTEM_PATHS if os.access(path, os.X_OK)), None)


def nginx_command(config: Path, settings: ProxySettings, *extra: str) -> list[str]:
    """nginx on ``config``; ``-e`` so not even start-up opens the system's /var/log/nginx/error.log."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(f"nginx is not installed: {INSTALL_HINT}")
    return [binary, "-c", str(config), "-p", f"{settings.state_dir}/", "-e", str(settings.error_log), *extra]


def check_config(config: Path, settings: ProxySettings) -> str | None:
    """``nginx -t`` on the file: None when nginx accepts it, else nginx's complaint in one line."""
    out = subprocess.run(nginx_command(config, settings, "-t", "-q"), capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        return None
    lines = [line for line in (out.stderr + out.stdout).splitlines() if "[emerg]" in line or "[crit]" in line]
    return " ".join((lines[0] if lines else out.stderr or out.stdout).split())[:400]


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def start_proxy(settings: ProxySettings, env: dict[str, str] | None = None) -> ManagedProcess:
    """Write ``nginx.conf`` into the state folder, start nginx on it and return once it listens."""
    config = write_proxy_config(settings, settings.state_dir / "nginx.conf", overwrite=True)
    if problem := check_config(config, settings):
        raise RuntimeError(f"nginx refused {config}: {problem}")
    process = ManagedProcess(
        "proxy",
        nginx_command(config, settings, "-g", "daemon off;"),
        settings.logs / "nginx.out",
        env or {"PATH": "/usr/sbin:/usr/bin:/bin"},
        cwd=settings.state_dir,
    )
    host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "::") else settings.listen_host
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _accepts_connections(host, settings.public_port):
            return process
        if not process.running():
            break
        time.sleep(0.1)
    process.stop()
    detail = (
        settings.error_log.read_text(errors="replace").strip().splitlines()[-1:] if settings.error_log.exists() else []
    )
    raise RuntimeError(f"nginx did not start on port {settings.public_port}: {' '.join(detail) or 'no error logged'}")


def refused_requests(settings: ProxySettings) -> list[str]:
    """The lines of the proxy's refusal log: one per request it answered with 403."""
    path = settings.refused_log
    return path.read_text(errors="replace").splitlines() if path.exists() else []
