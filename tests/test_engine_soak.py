"""`make soak`: the request engine over 10,000 mixed requests, with cancelled and refused ones in
the stream: every other request finishes, nothing compiles after warm-up, resident memory stays flat."""

from __future__ import annotations

import numpy as np
import pytest


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_ten_thousand_requests_hold_memory_flat(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(2026)
    engine = model.engine(slots=8, max_length=64, chunk_size=8)
    total, cancelled, refused, finished = 10_000, set(), 0, {}
    memory = {}
    submitted = []
    for i in range(total):
        r = dict(input_ids=rng.integers(0, 512, int(rng.integers(1, 40))).tolist(),
                 max_new_tokens=int(rng.integers(1, 24)), eos_token_id=[int(rng.integers(0, 512))])
        if i % 3 == 0:
            r.update(do_sample=True, seed=[i, 1], top_p=0.9, temperature=float(rng.uniform(0.5, 1.5)))
        if i % 101 == 50:  # a refused request in the middle of the stream: named, and nothing else changes
            with pytest.raises(ValueError, match=f"request {i}: top_k must be"):
                engine.submit({**r, "top_k": -1}, request_id=i)
            refused += 1
            continue
        submitted.append(engine.submit(r, request_id=i))
        if len(submitted) % 64 == 0:  # run what is queued, cancelling one queued and one running request
            engine.cancel(submitted[-1])
            cancelled.add(submitted[-1])
            for update in engine.stream():
                if update.result is not None:
                    finished[update.request_id] = update.result
                if engine.running and len(cancelled) % 2 == 0 and update.result is None:
                    victim = next(iter(engine.running.values())).request_id
                    if engine.cancel(victim):
                        cancelled.add(victim)
            if len(finished) >= 1000 and "after 1,000" not in memory:
                memory["after 1,000"] = (resident_mb(), model.trace_count)
    for result in engine:
        finished[result.request_id] = result
    memory["after 10,000"] = (resident_mb(), model.trace_count)
    assert len(finished) == len(submitted) and refused == len(range(50, total, 101))
    assert {i for i, r in finished.items() if r.finish_reason == "cancelled"} == cancelled
    grown = memory["after 10,000"][0] - memory["after 1,000"][0]
    print(f"resident memory after 1,000 / 10,000 requests: {memory['after 1,000'][0]:.0f} / "
          f"{memory['after 10,000'][0]:.0f} MB")
    assert memory["after 10,000"][1] == memory["after 1,000"][1]  # no compile after warm-up
    assert grown < 64, f"resident memory grew {grown:.0f} MB from 1,000 to 10,000 requests"
