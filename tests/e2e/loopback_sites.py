"""What every live-federation test prepares: site folders, the centre's held-out folder, TLS, node keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_loaders.site_folders import export_heldout_folder, export_site_folders
from fedtumor.security.certs import CertificateFiles, make_superlink_certificates
from fedtumor.security.node_keys import NodeKeyFiles, make_node_key


@dataclass(frozen=True)
class LoopbackSites:
    sites: dict[str, Path]  # site id -> its own data folder
    coordinator: Path  # the centre's held-out folder
    certs: CertificateFiles
    keys: dict[str, NodeKeyFiles]


def loopback_sites(cohort: Path, root: Path, names: tuple[str, ...]) -> LoopbackSites:
    """The cohort split into one folder per site, certificates for 127.0.0.1 and a key pair per site."""
    return LoopbackSites(
        sites=export_site_folders(cohort, root / "sites"),
        coordinator=export_heldout_folder(cohort, root / "coordinator"),
        certs=make_superlink_certificates(root / "certs", ["localhost"], ["127.0.0.1"]),
        keys={name: make_node_key(root / "keys", name) for name in names},
    )
