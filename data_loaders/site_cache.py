"""Sites a ClientApp process keeps in memory between messages, bounded by their tensors' bytes.

Ray runs a ClientApp process per worker and sends it the messages of several simulated sites
in turn (with one worker, all of them): a cache of one site reloads every site's data from the
disk cache on every message. A deployed node has one site, so it keeps that one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from data_loaders.site import SiteData

DEFAULT_MAX_BYTES = 2 * 2**30  # 2 GiB of image tensors: about 14 BraTS cases at 1 mm, a small cohort's sites


def site_bytes(site: SiteData) -> int:
    """Bytes of the image tensors a site's subjects hold in memory (0 for images not loaded)."""
    total = 0
    for subject in (*site.train, *site.val):
        for image in subject.get_images(intensity_only=False):
            if image._loaded:  # noqa: SLF001 - TorchIO's own flag; reading .data would load a lazy image
                total += image.data.element_size() * image.data.nelement()
    return total


class SiteCache:
    """The most recently used sites, as many as fit in ``max_bytes`` (always at least the last one).

    Example::

        >>> cache = SiteCache(max_bytes=2**30)
        >>> site = cache.get(("site-1",), lambda: load_site(config, node_config))  # loads once
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._sites: OrderedDict[Hashable, tuple[SiteData, int]] = OrderedDict()

    def sites(self) -> list[SiteData]:
        """The cached sites, least recently used first."""
        return [site for site, _ in self._sites.values()]

    def clear(self) -> None:
        self._sites.clear()

    def get(self, key: Hashable, load: Callable[[], SiteData]) -> SiteData:
        """The site cached under ``key``, or ``load()``'s, cached; the least recently used go first."""
        if key in self._sites:
            self._sites.move_to_end(key)
            return self._sites[key][0]
        site = load()
        self._sites[key] = (site, site_bytes(site))
        while len(self._sites) > 1 and sum(size for _, size in self._sites.values()) > self.max_bytes:
            self._sites.popitem(last=False)
        return site
