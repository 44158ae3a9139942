"""The dispatch gate (``pat_sglang.dispatch``) and the backend's use of it, eagerly and under CUDA graphs through the
graph-variant patch (``sglang_patches.graph_variants``) applied to SGLang's real DecodeCudaGraphRunner."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sglang_harness import (
    RadixHarness,
    RecordingDelegate,
    decode_batch,
    fake_model_runner,
    graph_view,
    shared_prompts,
)

from pat_sglang import dispatch
from pat_sglang.backend import DELEGATE_VARIANT, GRAPH_VARIANTS, PAT_VARIANT, PATAttnBackend
from pat_sglang.config import HeadConfig
from pat_sglang.forest import PrefixForest
from pat_sglang.planner import plan_forest
from pat_sglang.sglang_patches import apply_patches
from pat_sglang.sglang_patches.chain_table import ChainTable
from pat_sglang.sglang_patches.core import CAPTURE_GRAPH_VARIANTS, REPLAY_GRAPH_VARIANT, graph_variants_patched
from pat_sglang.sglang_patches.graph_variants import wrap_capture_one_shape, wrap_resolve_lora_variant

HQ, HKV, D = 8, 2, 64


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def _flat_plan(lengths: list[int], shared: int, seed: int):
    """Plan of requests with ``lengths`` whose first ``shared`` slots are the same (0: nothing shared)."""
    rng = np.random.default_rng(seed)
    prefix = rng.permutation(1 << 20)[:shared] + (1 << 20)
    rows, next_slot = [], 0
    for n in lengths:
        own = np.arange(next_slot, next_slot + n - shared)
        next_slot += n - shared
        rows.append(np.concatenate([prefix, own]))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32)
    forest = PrefixForest.from_flat(indptr, indices)
    return plan_forest(forest, HeadConfig(HQ, HKV, D, torch.bfloat16), slot_table=torch.from_numpy(indices))


@pytest.mark.parametrize("delegate", [None, "fa3", "flashinfer", "triton", "some_other_backend"])
def test_default_fractions_follow_the_measured_ratios(delegate: str | None) -> None:
    """Head dim 128, where ``NO_SHARING_TIME_RATIOS`` were measured."""
    bf16 = HeadConfig(HQ, HKV, 128, torch.bfloat16)
    fp8 = HeadConfig(HQ, HKV, 128, torch.bfloat16, kv_dtype=torch.float8_e4m3fn)
    f16 = dispatch.default_min_saved_fraction(bf16, delegate)
    f8 = dispatch.default_min_saved_fraction(fp8, delegate)
    r16, r8 = dispatch.NO_SHARING_TIME_RATIOS.get(delegate or "", dispatch.FALLBACK_RATIOS)
    for f, r in ((f16, r16), (f8, r8)):
        assert f == pytest.approx(max(0.0, 1 - 1 / (r * dispatch.DISPATCH_MARGIN)))
        assert 0.0 <= f < 1.0
    if delegate == "triton":
        assert f16 == 0.0  # SGLang's Triton decode is slower than PAT's forward without sharing: PAT serves all
    if delegate in (None, "some_other_backend"):  # unknown delegates gate as strictly as the strictest measured one
        for heads, f in ((bf16, f16), (fp8, f8)):
            assert f == max(dispatch.default_min_saved_fraction(heads, d) for d in dispatch.NO_SHARING_TIME_RATIOS)
    if delegate == "fa3":  # as fast as PAT's forward on 16-bit pools (so a batch must save some bytes), slower on FP8
        assert f16 > 0.0 and f8 == 0.0


@pytest.mark.parametrize("delegate", [None, "fa3", "flashinfer", "triton"])
def test_head_dims_with_their_own_ratios(delegate: str | None) -> None:
    """At head dims 64 and 256 a delegate measured there gates on its own ratio (FP8 pools: its FP8 ratio there); one
    not measured there (fa3 at 64, FP8 pools but flashinfer's at 256) never gates more loosely than at head dim 128 or
    than the slowest measured peer at that head dim; head dim 128 is unchanged."""
    def heads(d: int, fp8: bool = False) -> HeadConfig:
        return HeadConfig(HQ, HKV, d, torch.bfloat16, torch.float8_e4m3fn if fp8 else None)

    r16, r8 = dispatch.NO_SHARING_TIME_RATIOS.get(delegate or "", dispatch.FALLBACK_RATIOS)
    assert dispatch.no_sharing_time_ratio(heads(128), delegate) == r16
    assert dispatch.no_sharing_time_ratio(heads(128, True), delegate) == r8
    for d, measured in dispatch.HEAD_DIM_TIME_RATIOS.items():
        ratio = dispatch.no_sharing_time_ratio(heads(d), delegate)
        if delegate in measured:
            assert ratio == measured[delegate]
        else:
            assert ratio == max(r16, *measured.values()) >= r16
        fp8_measured = dispatch.HEAD_DIM_FP8_TIME_RATIOS.get(d, {})
        fp8_ratio = dispatch.no_sharing_time_ratio(heads(d, True), delegate)
        if delegate in fp8_measured:
            assert fp8_ratio == fp8_measured[delegate]
        else:
            assert fp8_ratio == max(r8, *measured.values(), *fp8_measured.values())
        f = dispatch.default_min_saved_fraction(heads(d), delegate)
        assert f == pytest.approx(max(0.0, 1 - 1 / (ratio * dispatch.DISPATCH_MARGIN)))


def test_fraction_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's fraction holds for every batch size; unset or empty, the measured gate."""
    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    monkeypatch.setenv(dispatch.MIN_SAVED_FRACTION_ENV, "0.3")
    gate = dispatch.configured_gate(heads)
    assert all(gate.for_batch(n) == 0.3 for n in (1, 2, 3, 4, 5, 256)) and gate.strictest == 0.3
    for bad in ("x", "-0.1", "1"):
        monkeypatch.setenv(dispatch.MIN_SAVED_FRACTION_ENV, bad)
        with pytest.raises(ValueError, match=dispatch.MIN_SAVED_FRACTION_ENV):
            dispatch.configured_gate(heads)
    monkeypatch.setenv(dispatch.MIN_SAVED_FRACTION_ENV, "")
    assert dispatch.configured_gate(heads) == dispatch.default_gate(heads)


@pytest.mark.parametrize("delegate", [None, "fa3", "flashinfer", "triton"])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("fp8", [False, True])
def test_batches_of_a_few_requests_gate_on_their_own_ratios(delegate: str | None, head_dim: int, fp8: bool) -> None:
    """A batch of n <= 4 requests takes the ratio measured at the least listed size >= n (a delegate not listed: the
    largest listed), never below the larger batches' ratio; larger batches take ``default_min_saved_fraction``."""
    heads = HeadConfig(HQ, HKV, head_dim, torch.bfloat16, torch.float8_e4m3fn if fp8 else None)
    gate = dispatch.default_gate(heads, delegate)
    base = dispatch.no_sharing_time_ratio(heads, delegate)
    assert gate.default == dispatch.default_min_saved_fraction(heads, delegate)
    sizes = sorted(dispatch.SMALL_BATCH_TIME_RATIOS)
    for n in range(1, sizes[-1] + 1):
        measured = dispatch.SMALL_BATCH_TIME_RATIOS[next(size for size in sizes if size >= n)]
        pairs = [measured[delegate]] if delegate in measured else list(measured.values())
        ratio = max(pair[1 if fp8 else 0] for pair in pairs)
        assert gate.for_batch(n) == pytest.approx(max(0.0, 1 - 1 / (max(base, ratio) * dispatch.DISPATCH_MARGIN)))
        assert gate.for_batch(n) >= gate.default
    for n in (sizes[-1] + 1, 64, 1024):
        assert gate.for_batch(n) == gate.default
    assert gate.strictest == max(gate.default, *(gate.for_batch(n) for n in range(1, sizes[-1] + 1)))


def test_small_batches_against_fa3_at_head_dim_128() -> None:
    """The measured cases (H200, 2026-12-02): with 16-bit pools PAT takes 1.08-1.21x fa3's time on 1-4 requests
    without sharing, so such a batch must save more than a larger one; over FP8 pools a single request (1.02x) goes to
    fa3, two or more stay on PAT (0.88-0.89x)."""
    bf16 = dispatch.default_gate(HeadConfig(32, 8, 128, torch.bfloat16), "fa3")
    fp8 = dispatch.default_gate(HeadConfig(32, 8, 128, torch.bfloat16, torch.float8_e4m3fn), "fa3")
    assert bf16.for_batch(1) > bf16.for_batch(2) > bf16.for_batch(4) > bf16.for_batch(5) == bf16.default > 0.0
    assert fp8.default == 0.0 and fp8.for_batch(1) > 0.0 and fp8.for_batch(2) == fp8.for_batch(4) == 0.0
    assert bf16.describe() == "4.8% (1 request: 21.3%, 2 requests: 13.4%, 3-4 requests: 11.8%)"
    assert fp8.describe() == "0.0% (1 request: 6.6%, 2-4 requests: 0.0%)"
    assert dispatch.DispatchGate(0.25).describe() == "25.0%"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gate_reads_the_plans_bytes(seed: int) -> None:
    """No sharing: PAT moves at least per-request decode's bytes, so only a zero fraction keeps it. A prefix that
    is most of every request: kept at the default. The gate's answer is exactly the byte inequality."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(300, 2000, size=12).tolist()
    f = dispatch.default_min_saved_fraction(HeadConfig(HQ, HKV, D, torch.bfloat16))
    alone = _flat_plan(lengths, 0, seed)
    assert alone.stats.kv_bytes_planned == alone.stats.kv_bytes_per_request
    assert not dispatch.pat_pays(alone.stats, f) and dispatch.pat_pays(alone.stats, 0.0)
    for shared in (20, 100, 250, 290):
        plan = _flat_plan(lengths, shared, seed)
        s = plan.stats
        saved = 1 - (s.kv_bytes_planned + s.partial_bytes) / s.kv_bytes_per_request
        assert dispatch.pat_pays(s, f) == (saved >= f)
    assert dispatch.pat_pays(_flat_plan(lengths, 290, seed).stats, f)  # 290 of >= 300 tokens shared by 12
    assert dispatch.pat_pays(None, f)


def _harness(shared: bool, seed: int = 0) -> RadixHarness:
    h = RadixHarness()
    rng = np.random.default_rng(seed)
    if shared:
        prompts = shared_prompts(rng)
    else:  # distinct prompts: the radix tree shares nothing between them
        prompts = [(rng.integers(0, 30000, size=int(rng.integers(40, 200))) + 100000 * i).tolist() for i in range(9)]
    for prompt in prompts:
        h.add_request(prompt)
    h.decode(steps=2)
    return h


def _backend(h: RadixHarness, table: ChainTable, **kw) -> tuple[PATAttnBackend, RecordingDelegate, SimpleNamespace]:
    runner = fake_model_runner(h, HQ, HKV, D, 2, torch.bfloat16)
    delegate = RecordingDelegate()
    return PATAttnBackend(runner, delegate=delegate, chain_table=table, **kw), delegate, runner


def _saved_fraction_and_gated(prefix: int, own: int, requests: int) -> tuple[float, int, PATAttnBackend]:
    """A batch of ``requests`` prompts sharing their first ``prefix`` tokens (then ``own`` of their own), decoded
    two steps: the fraction of per-request KV bytes its plan saves (planned with no gate), and a backend with the
    default gate (a delegate without a name) that has been handed the same batch."""
    rng = np.random.default_rng(prefix + own + requests)
    system = rng.integers(1000, 2000, size=prefix).tolist()
    h = RadixHarness()
    for i in range(requests):
        h.add_request(system + (rng.integers(0, 30000, size=own) + 100000 * (i + 1)).tolist())
    h.decode(steps=2)
    table = ChainTable()
    plain, _, _ = _backend(h, table, min_saved_fraction=0.0)
    plain.init_forward_metadata(decode_batch(h, table))
    s = plain.forward_metadata.plan.stats
    gated, _, _ = _backend(h, table)
    gated.init_forward_metadata(decode_batch(h, table))
    return 1 - (s.kv_bytes_planned + s.partial_bytes) / s.kv_bytes_per_request, requests, gated


def test_a_batch_of_two_requests_must_save_more_than_a_larger_one() -> None:
    """Two requests whose plan saves 6.4% of their KV bytes go to the delegate (a batch of two must save 13.4% under
    the strictest measured small-batch ratio), six that save 5.9% stay on PAT (larger batches: 5.7%)."""
    saved, n, be = _saved_fraction_and_gated(40, 140, 2)
    assert be.gate.default <= saved < be.gate.for_batch(n)
    assert be.forward_metadata is None and be.planner.counters.declined == 1
    saved, n, be = _saved_fraction_and_gated(30, 250, 6)
    assert be.gate.for_batch(n) == be.gate.default <= saved < be.gate.for_batch(2)
    assert be.forward_metadata is not None and be.planner.counters.declined == 0


def test_eager_steps_without_sharing_go_to_the_delegate() -> None:
    table = ChainTable()
    for shared in (True, False):
        h = _harness(shared)
        be, delegate, runner = _backend(h, table)
        fb = decode_batch(h, table)
        be.init_forward_metadata(fb)
        assert be.stats.steps == 1 and be.stats.row_reads == 0
        if shared:
            assert be.forward_metadata is not None and be.planner.counters.declined == 0 and delegate.calls == []
        else:
            assert be.forward_metadata is None and be.planner.counters.declined == 1
            assert delegate.calls == ["init_forward_metadata"]
            assert be.forward_decode(None, None, None, runner.model[0], fb) == "delegate-decode"
        assert ("served by the delegate " + str(be.planner.counters.declined)) in be.stats.summary(be.planner.counters)
    h = _harness(False)
    be, delegate, _ = _backend(h, table, min_saved_fraction=0.0)  # 0: PAT serves every batch it can plan
    be.init_forward_metadata(decode_batch(h, table))
    assert be.forward_metadata is not None and be.planner.counters.declined == 0 and delegate.calls == []
    with pytest.raises(ValueError, match="min_saved_fraction"):
        _backend(h, table, min_saved_fraction=1.0)


def test_graph_variants_captured_and_replayed_per_step() -> None:
    """The runner's capture of one batch size runs once per variant, each capture preparing its own backend; each
    replay's graph label is the variant the step's metadata chose, on top of the runner's own label."""
    apply_patches()
    assert graph_variants_patched() and CAPTURE_GRAPH_VARIANTS.is_applied() and REPLAY_GRAPH_VARIANT.is_applied()
    table = ChainTable()
    h_shared, h_alone = _harness(True), _harness(False, seed=3)
    be, delegate, _ = _backend(h_shared, table)
    max_bs = 16
    be.init_cuda_graph_state(max_bs, max_bs)
    assert be.graph_variants == GRAPH_VARIANTS and delegate.calls == ["init_cuda_graph_state"]
    fill = be.get_cuda_graph_seq_len_fill_value()

    captured: list[tuple[int, str | None, str | None, bool]] = []

    def capture_one_shape(runner, size, forward, stream_idx=None, variant_label=None):  # the runner's, in short
        view = graph_view(decode_batch(h_shared, table), size, fill)
        runner.attn_backend.init_forward_metadata_out_graph(view, in_capture=True)
        runner.attn_backend.init_forward_metadata_in_graph(view)
        captured.append((size, variant_label, be.capture_variant, be.forward_metadata is not None))

    runner = SimpleNamespace(attn_backend=be)
    delegate.calls.clear()
    wrap_capture_one_shape(capture_one_shape)(runner, max_bs, None, None, None)
    wrap_capture_one_shape(capture_one_shape)(runner, 12, None, None, "lora")
    assert captured == [
        (max_bs, PAT_VARIANT, PAT_VARIANT, True), (max_bs, DELEGATE_VARIANT, DELEGATE_VARIANT, False),
        (12, "lora+" + PAT_VARIANT, PAT_VARIANT, True), (12, "lora+" + DELEGATE_VARIANT, DELEGATE_VARIANT, False),
    ]
    assert delegate.calls == ["init_forward_metadata_out_graph (capture)", "init_forward_metadata_in_graph"] * 2
    assert be.capture_variant is None and be.stats.steps == 0  # capture batches are not serving steps

    resolve = wrap_resolve_lora_variant(lambda runner, fb: None)
    be_alone, delegate_alone, _ = _backend(h_alone, table)  # the unshared batch's runner: its own pools
    be_alone.init_cuda_graph_state(max_bs, max_bs)
    for target, target_delegate, h, want in (
        (be, delegate, h_shared, PAT_VARIANT),
        (be_alone, delegate_alone, h_alone, DELEGATE_VARIANT),
        (be, delegate, h_shared, PAT_VARIANT),
    ):
        target_delegate.calls.clear()
        view = graph_view(decode_batch(h, table), max_bs, fill)
        target.init_forward_metadata_out_graph(view)
        assert target.replay_variant == want
        assert resolve(SimpleNamespace(attn_backend=target), view) == want
        if want == DELEGATE_VARIANT:
            assert target.forward_metadata is None and target.planner.counters.declined == 1
            assert target_delegate.calls == ["init_forward_metadata_out_graph"]
        else:
            assert target.forward_metadata is not None and target.graph_buffers.plan is target.forward_metadata.plan
            assert target_delegate.calls == []
    # A backend without variants (or another backend) leaves the runner's labels as they were.
    plain = SimpleNamespace(attn_backend=SimpleNamespace())
    assert wrap_resolve_lora_variant(lambda runner, fb: "nolora")(plain, None) == "nolora"
    calls = []
    wrap_capture_one_shape(lambda *a: calls.append(a[1:]))(plain, 8, None, None, None)
    assert calls == [(8, None, None, None)]


def test_zero_fraction_captures_one_graph() -> None:
    table = ChainTable()
    h = _harness(True)
    be, delegate, _ = _backend(h, table, min_saved_fraction=0.0)
    be.init_cuda_graph_state(8, 8)
    assert be.graph_variants == () and delegate.calls == []


def _planner_steps(shared_len: int, seed: int, min_saved: float, steps: int = 4):
    """A batch of 8 requests sharing ``shared_len`` radix tokens, decoded ``steps`` times (unchanged batch), planned
    with the gate by one planner and without it by another (reuse off: every step planned); the gated planner's
    answers, the ungated plans, and the gated planner."""
    from sglang_harness import RadixHarness

    from pat_sglang.config import DeviceSpec
    from pat_sglang.decode_step import DecodeStepPlanner, StepBatch
    from pat_sglang.sglang_patches.publish import publish_decode_batch

    rng = np.random.default_rng(seed)
    h = RadixHarness(max_reqs=32, max_context=1024, num_slots=1 << 14)
    system = rng.integers(1000, 2000, size=shared_len).tolist()
    for _ in range(8):
        h.add_request(system + rng.integers(2000, 9000, size=int(rng.integers(60, 120))).tolist())
    heads = HeadConfig(HQ, HKV, D, torch.bfloat16)
    gated = DecodeStepPlanner(heads, DeviceSpec(), h.req_to_token)
    plain = DecodeStepPlanner(heads, DeviceSpec(), h.req_to_token, reuse_plans=False)
    table = ChainTable(enabled=True)
    live = list(range(8))
    got, want = [], []
    for _ in range(steps):
        h.decode(steps=1, only=live)
        publish_decode_batch(h.schedule_batch(live), table)
        pb = table.batch
        batch = StepBatch(np.asarray(pb.rows, np.int64), np.array([h.seq_lens[i] for i in live], np.int64), 8, pb)
        got.append(gated.plan(batch, min_saved=min_saved))
        want.append(plain.plan(batch))
    return got, want, gated


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shared_len", [0, 6, 12, 24, 200])
def test_planner_gate_equals_the_plan_bytes_rule(seed: int, shared_len: int) -> None:
    """The planner's gate gives no plan exactly when the full plan would not pay (with any sharing: none, around the
    threshold, most of each request); the first plan it gives is the plan. Batches the published paths' bound
    declines, and declined unchanged steps, are decided without building a forest."""
    f = dispatch.default_min_saved_fraction(HeadConfig(HQ, HKV, D, torch.bfloat16))
    got, want, gated = _planner_steps(shared_len, seed, f)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (not dispatch.pat_pays(w.stats, f))
    if got[0] is not None:  # later steps may take this same plan (open ends), the plain planner plans each anew
        assert got[0].stats == want[0].stats and torch.equal(got[0].items, want[0].items)
    c = gated.counters
    assert c.declined == sum(g is None for g in got)
    if got[0] is None:  # the batch is unchanged after the first step: declined again with no forest work
        assert c.declined_unplanned >= len(got) - 1 and c.reused == 0
        # a forest only where the paths' bound let the first step through to planning
        assert c.built == (0 if c.declined_unplanned == len(got) else 1)
    if shared_len == 0:
        assert all(g is None for g in got) and c.declined_unplanned == len(got) and c.built == 0  # the bound
    if shared_len == 200:
        assert all(g is not None for g in got)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_delegate_label_option_declines_every_batch_unplanned(seed: int) -> None:
    """``+delegate`` (``bench/ab/server.py``) sets the gate so that every decode batch goes to the delegate with no
    forest or plan made, also a batch that shares nearly everything (200 shared tokens of ~290)."""
    from scripts import BENCH, on_path

    on_path(BENCH)
    from ab.server import LABEL_OPTIONS

    fraction = dispatch.checked_fraction(float(LABEL_OPTIONS["delegate"]["PAT_SGLANG_MIN_SAVED_FRACTION"]), "+delegate")
    got, want, gated = _planner_steps(200, seed, fraction)
    assert all(w is not None and dispatch.pat_pays(w.stats, 0.5) for w in want)  # the batch shares most of its KV
    c = gated.counters
    assert all(g is None for g in got) and c.declined == c.declined_unplanned == len(got) and c.built == 0


@pytest.mark.parametrize("name", ["fa3", "flashinfer", "triton"])
def test_named_delegate_built_through_the_registry_sets_the_gate(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``PAT_SGLANG_DELEGATE`` names the delegate; the backend builds it from SGLang's registry and takes that
    delegate's default fraction (triton: 0, PAT serves every batch)."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    from pat_sglang.backend import DELEGATE_ENV

    built = []
    monkeypatch.setitem(ATTENTION_BACKENDS, name, lambda runner: built.append(runner) or RecordingDelegate())
    monkeypatch.setenv(DELEGATE_ENV, name)
    h = _harness(True)
    runner = fake_model_runner(h, HQ, HKV, D, 2, torch.bfloat16)
    be = PATAttnBackend(runner, chain_table=ChainTable())
    assert isinstance(be.delegate, RecordingDelegate) and built == [runner]
    assert be.gate == dispatch.default_gate(be.heads, name)
    assert be.gate.default == dispatch.default_min_saved_fraction(be.heads, name)
    if name == "triton":
        assert be.gate.default == 0.0
    for bad in ("pat", "no_such_backend"):
        monkeypatch.setenv(DELEGATE_ENV, bad)
        with pytest.raises(ValueError, match=DELEGATE_ENV):
            PATAttnBackend(runner, chain_table=ChainTable())


def test_default_delegate_built_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``PAT_SGLANG_DELEGATE``: the backend SGLang would pick, or the first usable fallback (a CPU runner has
    no SGLang default), and that delegate's fraction."""
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    from pat_sglang.backend import DELEGATE_ENV, default_delegate_name

    monkeypatch.delenv(DELEGATE_ENV, raising=False)
    h = _harness(True)
    runner = fake_model_runner(h, HQ, HKV, D, 2, torch.bfloat16)
    name, why = default_delegate_name(runner)
    assert name in ATTENTION_BACKENDS and name != "pat" and why
    monkeypatch.setitem(ATTENTION_BACKENDS, name, lambda runner: RecordingDelegate())
    be = PATAttnBackend(runner, chain_table=ChainTable())
    assert isinstance(be.delegate, RecordingDelegate)
    assert be.gate == dispatch.default_gate(be.heads, name)
    assert be.gate.default == dispatch.default_min_saved_fraction(be.heads, name)


def test_graph_step_pat_cannot_plan_replays_the_delegate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CUDA graphs with the delegate's graph captured, a batch the planner refuses is replayed on the delegate
    (counted, logged once), as in eager mode; without variants the refusal is raised, never guessed at."""
    apply_patches()  # the graph runner's per-variant capture, as the plugin installs it (not left to an earlier test)
    table = ChainTable()
    h = _harness(True)
    be, delegate, _ = _backend(h, table)
    be.init_cuda_graph_state(16, 16)
    fill = be.get_cuda_graph_seq_len_fill_value()

    def refuse(*args, **kwargs):
        raise ValueError("over the plan limits")

    monkeypatch.setattr(be.planner, "plan", refuse)
    delegate.calls.clear()
    be.init_forward_metadata_out_graph(graph_view(decode_batch(h, table), 16, fill))
    assert be.replay_variant == DELEGATE_VARIANT and be.forward_metadata is None and be.stats.delegated == 1
    assert delegate.calls == ["init_forward_metadata_out_graph"]
    be.graph_variants = ()
    with pytest.raises(ValueError, match="plan limits"):
        be.init_forward_metadata_out_graph(graph_view(decode_batch(h, table), 16, fill))


@pytest.mark.parametrize("seed", [0, 1])
def test_fp8_pools_at_head_dim_256_go_to_the_delegate_without_sharing(seed: int) -> None:
    """FP8 pools at head dim 256 take up to 1.12x fa3's FP8 decode without sharing (H200, 2026-12-02; 1.49x on
    2026-12-01) and 0.84-0.94x FlashInfer's: fa3's gate, and that of every delegate not measured there, asks a plan to
    save more than a tenth of the KV bytes, where FlashInfer's asks little or nothing (its ratio times the margin,
    clamped at 0); a batch saving between the two goes to fa3 over FP8 pools only, and one sharing most of every
    request stays on PAT."""
    fp8_256 = HeadConfig(HQ, HKV, 256, torch.bfloat16, torch.float8_e4m3fn)
    bf16_256 = HeadConfig(HQ, HKV, 256, torch.bfloat16)
    for delegate in (None, "fa3", "triton"):
        assert dispatch.default_min_saved_fraction(fp8_256, delegate) > 0.1
    f8 = dispatch.default_min_saved_fraction(fp8_256, "fa3")
    f16 = dispatch.default_min_saved_fraction(bf16_256, "flashinfer")
    fi_f8 = dispatch.default_min_saved_fraction(fp8_256, "flashinfer")
    fi_ratio = dispatch.HEAD_DIM_FP8_TIME_RATIOS[256]["flashinfer"]
    assert fi_f8 == pytest.approx(max(0.0, 1 - 1 / (fi_ratio * dispatch.DISPATCH_MARGIN)))
    assert f16 < 0.1 and fi_f8 < 0.1
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1000, 1200, size=12).tolist()
    saved_of = {}
    for shared in (0, 150, 950):
        s = _flat_plan(lengths, shared, seed).stats
        saved_of[shared] = 1 - (s.kv_bytes_planned + s.partial_bytes) / s.kv_bytes_per_request
        assert dispatch.pat_pays(s, f8) == (saved_of[shared] >= f8)
    assert max(f16, fi_f8) <= saved_of[150] < f8  # served over 16-bit pools or before FlashInfer, declined before fa3
    assert saved_of[0] < f16 and saved_of[950] > f8
