"""The ClientApp's site cache keeps the sites that fit in its byte budget, most recent first."""

import pytest
import torch
import torchio as tio

from data_loaders.site import SiteData
from data_loaders.site_cache import SiteCache, site_bytes


def a_site(name: str, edge: int = 8) -> SiteData:
    subject = tio.Subject(t1=tio.ScalarImage(tensor=torch.zeros(1, edge, edge, edge)))
    return SiteData(site_id=name, train=[subject], val=[subject])


def test_site_bytes_counts_every_loaded_image_tensor():
    assert site_bytes(a_site("a", edge=8)) == 2 * 8**3 * 4  # the subject in train and in val, float32


def test_the_cache_loads_once_and_evicts_the_least_recently_used_over_budget():
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return a_site(name)

        return load

    one_site = site_bytes(a_site("x"))
    cache = SiteCache(max_bytes=2 * one_site)
    first = cache.get("a", loader("a"))
    assert cache.get("a", loader("a")) is first and loads == ["a"]
    cache.get("b", loader("b"))
    cache.get("a", loader("a"))  # a is now the most recent
    cache.get("c", loader("c"))  # over budget: b goes
    assert [site.site_id for site in cache.sites()] == ["a", "c"] and loads == ["a", "b", "c"]
    cache.get("b", loader("b"))
    assert loads == ["a", "b", "c", "b"]


def test_a_site_over_the_budget_is_still_kept_alone():
    cache = SiteCache(max_bytes=1)
    site = cache.get("big", lambda: a_site("big"))
    assert cache.sites() == [site]
    cache.get("next", lambda: a_site("next"))
    assert [s.site_id for s in cache.sites()] == ["next"]
    with pytest.raises(ValueError, match="max_bytes"):
        SiteCache(max_bytes=-1)
