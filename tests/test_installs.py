"""scripts/check_installs.py's `pip check` over a resolution report (the installs themselves are resolved by the
script against the registry: python scripts/check_installs.py --sets base cpu cuda)."""

import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location("check_installs", ROOT / "scripts" / "check_installs.py")
check_installs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_installs)


def package(name, version, *requires):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


def test_unmet_requirements_of_a_resolved_set_are_reported():
    report = {"install": [
        package("vllm", "0.33.0", "torch==2.14.0", "transformers<5.21.0,>=5.16.1", "torchvision==0.29.0",
                'pandas; extra == "bench"', 'pywin32; sys_platform == "win32"'),
        package("torch", "2.13.0+cpu"), package("transformers", "5.19.0")]}
    assert check_installs.broken(report) == [
        "vllm 0.33.0 requires torch==2.14.0, but the set has 2.13.0+cpu",
        "vllm 0.33.0 requires torchvision==0.29.0, which is not in the set"]
    report["install"][1] = package("torch", "2.14.0")
    report["install"].append(package("Torchvision", "0.29.0", "torch==2.14.0"))
    assert check_installs.broken(report) == []


def test_the_three_installs_pin_one_transformers():
    pins = {check_installs.pinned(ROOT / f, "transformers") for f in ("requirements.txt", "requirements-vllm-cpu.txt")}
    assert pins == {"5.19.0"}
    cuda = [l for l in (ROOT / "requirements-vllm.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert cuda == ["vllm==0.33.0", "torch==2.14.0"]  # transformers comes from requirements.txt, as on CPU
