"""CPU half of ``bench/multicast_probe.py``: every mode of the probe compiles with NVRTC to a cubin for its target
(gather and bulk for sm_90, multicast for sm_90a), and shapes the kernel cannot run are refused before any build."""

from __future__ import annotations

import pytest
from scripts import BENCH, load_script


@pytest.fixture(scope="module")
def probe():
    return load_script(BENCH / "multicast_probe.py")


def test_every_mode_compiles(probe) -> None:
    built = {b: probe.compile_probe(b) for b in probe.builds(4, [2, 4, 8])}
    assert [b.name for b in built] == ["gather", "bulk", "multicast x2", "multicast x4", "multicast x8"]
    assert all(cubin[:4] == b"\x7fELF" for cubin in built.values())
    assert probe.ProbeBuild(2, 4, 8).options("/inc")[0] == "--gpu-architecture=sm_90a"


def test_a_mode_without_its_options_fails_to_build(probe) -> None:
    """The source refuses a build that lacks its -D options (no silent default for the mode or the cluster)."""
    from pat_sglang.kernels import KernelBuildError

    class NoCluster(probe.ProbeBuild):
        def options(self, include_dir: str) -> list[str]:
            return [o for o in super().options(include_dir) if not o.startswith("-DCLUSTER")]

    with pytest.raises(KernelBuildError, match="PROBE_MODE 2 needs CLUSTER"):
        probe.compile_probe(NoCluster(2, 4, 4))


@pytest.mark.parametrize(("tokens", "rows", "nodes", "clusters", "match"), [
    (1000, 32, 8, [2], "multiple of 16"),
    (4112, 32, 8, [2], "at most 4096"),
    (1024, 0, 8, [2], "positive"),
    (1024, 30, 8, [4], "dividing --rows"),
    (1024, 32, 8, [16], "one of 2, 4, 8"),
])
def test_bad_shapes_refused(probe, tokens: int, rows: int, nodes: int, clusters: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        probe.check_shape(tokens, rows, nodes, clusters)
    with pytest.raises(SystemExit):
        probe.main(["--tokens", str(tokens), "--rows", str(rows), "--nodes", str(nodes), "--clusters",
                    *map(str, clusters), "--build-only"])
