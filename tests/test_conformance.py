"""Every registered name passes the conformance suite (declared parameters, invalid values in the
one format, threat tag), iterating the registry over every family; every evasion attack also runs
on two toy targets."""

import pytest

from advkit import registry
from advkit.testing import check_entry, check_evasion_attack, toy_image_target, toy_linear_target

EVASION = registry.list("evasion")
# attacks whose paper defaults take minutes on the toy; the behaviour is the same at these budgets
FAST = {"cw-l2": {"binary_search_steps": 3, "max_iter": 50}, "boundary": {"max_queries": 300}}


@pytest.fixture(scope="module")
def image_target():
    return toy_image_target(seed=0, n=24)


@pytest.fixture(scope="module")
def linear_target():
    return toy_linear_target(seed=0, n=24)


@pytest.mark.parametrize("name", EVASION)
def test_conformance_on_image_cnn(name, image_target):
    target, x, y = image_target
    check_evasion_attack(name, target, x, y, params=FAST.get(name))


@pytest.mark.parametrize("name", EVASION)
def test_conformance_on_linear_sklearn(name, linear_target):
    target, x, y = linear_target
    entry = registry.get(name)
    if getattr(entry.cls, "images_only", False):
        pytest.skip(f"{name} applies to images only")
    check_evasion_attack(name, target, x, y, params=FAST.get(name))


@pytest.mark.parametrize("name", registry.list())
def test_every_registered_name_conforms(name):
    check_entry(name)


def test_the_registry_covers_every_family():
    assert {e.family for e in registry.entries()} >= {"evasion", "poisoning", "defense"}
