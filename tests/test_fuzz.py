"""A short run of the decode-path fuzzer (the long run is ``python tests/fuzz.py --cases 100000``)."""

from __future__ import annotations

import fuzz


import pytest


@pytest.mark.parametrize(("arch", "cases"), [("hyperprior", 400), ("checkerboard", 200)])
def test_short_fuzz_run_raises_only_project_errors(tmp_path, arch, cases):
    res = fuzz.run(cases, seed=7, case_timeout=60, crashes=tmp_path, arch=arch)
    assert res["failures"] == [], res["failures"][:5]
    assert sum(res["outcomes"].values()) == cases
    # the run exercised more than the CRC check
    deeper = {k for k in res["outcomes"] if k not in ("ChecksumError",)}
    assert len(deeper) >= 3, res["outcomes"]
