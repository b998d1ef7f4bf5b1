"""How long a model switch holds the data path, over many switches, and whether any window is lost or repeated.

Run from the project root::

    python bench/bench_swap.py                 # 2,000 switches, ~20 s
    python bench/bench_swap.py --swaps 500 --batch 16

A gateway's slot (edgeflow.ota.slot.ModelSlot, the code eo.infer runs) scores the shipped recording's feature
vectors batch by batch on the real LiteRT runtime, over and over. Two signed versions of the int8 model take
turns: each is offered, shadows ``--shadow`` windows beside the active one, passes the gates and is promoted
(no health watch, so every promotion is followed by the next offer). As on a gateway, the slot polls a model
store and writes every event and its state there (from its background thread). Measured:

* **switch**: how long the promotion held the batch that made it (deciding, swapping the state reference,
  recording the event; writing the store and printing happen in the slot's background thread), in wall time
  and in the scoring thread's CPU time (the difference is the machine's other load and the GIL);
* **next batch**: the first batch after a switch (scored by the new version, on its interpreter made while it
  shadowed) against batches with no switch: the wall time a window waits because of the switch;
* **windows**: every window must come out exactly once, in order: lost = in - out, repeated = out - distinct.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeflow.metrics import FlowStats  # noqa: E402
from edgeflow.model import LiteRTModelHandler  # noqa: E402
from edgeflow.model.signing import TrustedKeys  # noqa: E402
from edgeflow.model.verify import sign_model  # noqa: E402
from edgeflow.ota.gates import Gates  # noqa: E402
from edgeflow.ota.slot import ModelSlot, Runner, SlotState, Version  # noqa: E402
from edgeflow.ota.store import ModelStore  # noqa: E402

KEYS = ROOT / "models" / "keys"


def _features() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("_bench_build", ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return np.asarray(module.recording_features(ROOT / "examples" / "data" / "pump_vibration.csv").x)


def _version(path: Path, trusted: TrustedKeys) -> Version:
    handler = LiteRTModelHandler(path, trusted_keys=trusted)
    info = handler.load_model()
    assert info.threshold is not None
    return Version(handler, info, info.threshold, path)


def _pct(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) / 1000.0 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=4, help="windows per batch (4: one per pump)")
    parser.add_argument("--shadow", type=int, default=8, help="windows each candidate shadows before promotion")
    args = parser.parse_args(argv)

    trusted = TrustedKeys.load(KEYS)
    x = _features()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "pump_ae"
        shutil.copytree(ROOT / "models" / "pump_ae", other)
        text = (other / "manifest.json").read_text().replace('"version": "1.0.0+5c8ff791"', '"version": "1.0.1"')
        (other / "manifest.json").write_text(text)
        sign_model(other / "manifest.json", KEYS / "TEST-ONLY-ed25519.key")
        versions = [
            _version(ROOT / "models" / "pump_ae" / "manifest.json", trusted),
            _version(other / "manifest.json", trusted),
        ]
    stats = FlowStats()
    store_dir = tempfile.TemporaryDirectory()
    slot = ModelSlot(
        "bench",
        SlotState(versions[0]),
        load=lambda path, _expiry: _version(path, trusted),
        gates=Gates(windows=args.shadow, health_windows=0, max_p99_us=1e6),
        stats=stats,
        allow_downgrade=True,  # the two versions take turns
        store=ModelStore(store_dir.name),  # as on a gateway: events and state written, the store polled
        poll_s=0.05,
    )
    runner = Runner()
    out: list[int] = []
    serving: list[int] = []
    shadowing: list[int] = []
    after: list[int] = []
    n, sent, swaps = len(x), 0, 0

    def batch() -> tuple[int, object]:
        nonlocal sent
        idx = np.arange(sent, sent + args.batch) % n
        t0 = time.perf_counter_ns()
        outcome = slot.score(runner, x[idx])
        dt = time.perf_counter_ns() - t0
        out.extend(sent + i for i in range(len(outcome.scores)))
        sent += args.batch
        return dt, outcome

    gc.collect()
    gc.freeze()
    for _ in range(2000):  # the baseline: one model, no update
        serving.append(batch()[0])
    started = time.perf_counter()
    after_due = False
    while swaps < args.swaps or after_due:
        if slot.state.phase == "serving" and not after_due:
            slot.offer(versions[(swaps + 1) % 2])
        before = slot.state.active
        dt, _outcome = batch()
        if after_due:
            after.append(dt)
            after_due = False
        elif slot.state.active is not before:  # this batch's gates passed: it made the switch
            swaps += 1
            after_due = True
        else:
            shadowing.append(dt)
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    assert slot.flush(30)
    written = len(ModelStore(store_dir.name).events()[0])
    store_dir.cleanup()
    lost, repeated = sent - len(out), len(out) - len(set(out))
    decisions = [wall for wall, _cpu in slot.decisions_ns]
    cpu = [c for _wall, c in slot.decisions_ns]
    print(f"{swaps:,} switches in {elapsed:.1f} s, batches of {args.batch} windows, {args.shadow} shadow windows each")
    print("| measure | p50 (us) | p99 (us) | max (us) |")
    print("|---|---:|---:|---:|")
    print(f"| switch: promotion holding its batch | {_pct(decisions, 50):.1f} | {_pct(decisions, 99):.1f} | "
          f"{max(decisions) / 1000:.1f} |")  # fmt: skip
    print(f"| switch, CPU time of the scoring thread | {_pct(cpu, 50):.1f} | {_pct(cpu, 99):.1f} | "
          f"{max(cpu) / 1000:.1f} |")  # fmt: skip
    print(f"| first batch after a switch (new version) | {_pct(after, 50):.1f} | {_pct(after, 99):.1f} | "
          f"{max(after) / 1000:.1f} |")  # fmt: skip
    print(f"| batch while a candidate shadows (two models) | {_pct(shadowing, 50):.1f} | "
          f"{_pct(shadowing, 99):.1f} | {max(shadowing) / 1000:.1f} |")  # fmt: skip
    print(f"| batch with no update (baseline) | {_pct(serving, 50):.1f} | {_pct(serving, 99):.1f} | "
          f"{max(serving) / 1000:.1f} |")  # fmt: skip
    print(
        f"windows in {sent:,}, out {len(out):,}, lost {lost}, repeated {repeated}; "
        f"counters: swaps {stats.counts.get('infer.swaps', 0):,}, rejected {stats.counts.get('infer.swap_rejected', 0)}"
    )
    print(f"store: {written:,} events written by the background thread")
    return 0 if lost == repeated == 0 and stats.counts.get("infer.swaps", 0) == swaps else 1


if __name__ == "__main__":
    sys.exit(main())
