"""Fault injection in the Pythons a test starts (tests/test_faults.py puts this folder on their PYTHONPATH).

A catching test such as tests/test_cli.py runs run.py in a subprocess: the fault must be there too. While a
catching test runs, conftest.py writes its fault's name into the file LATENTMAS_FAULT_NOW names, and every Python
started meanwhile applies that fault (tests/faults.py) before running anything else. Outside fault-injection runs
this folder is not on any path.
"""

import os
import sys
from pathlib import Path

_now = os.environ.get("LATENTMAS_FAULT_NOW")
_name = Path(_now).read_text().strip() if _now and Path(_now).is_file() else ""
if _name:
    _tests = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_tests.parent), str(_tests)]
    import faults

    faults.apply(_name, faults.PlainPatch())
