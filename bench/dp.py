"""DP fine-tuning figures: what DP costs per step, what it costs in accuracy, what it buys.

    python bench/dp.py                       # all three sections, CPU sizes (about 30-60 min on 2 cores)
    python bench/dp.py --sections utility    # one section
    python bench/dp.py --rows 1000 --epochs 10 --steps 3   # fewer rows and steps: quicker, noisier

Sections:

speed    For each task on the same model and batch: mean step time and peak memory without
         DP, with per-sample hooks, with ghost clipping and with ``auto`` (the default: the
         mode the engine picks there, measured as its own run), and the ratios to non-DP;
         then a verdict of ``auto`` against the 1.5x GPU target ("not measurable: no GPU"
         on a CPU). The
         classifier trains its top ``--top-layers`` MiniLM layers + head (6 = the whole
         encoder, as the H200 figures in docs/finetuning.md); LoRA is SmolLM2-135M, r=16 on
         q_proj/v_proj. Each mode runs in its own process (peak RSS on CPU is per process;
         on CUDA it is ``max_memory_allocated``), modes alternate over ``--rounds``.
utility  Held-out accuracy of a MiniLM classifier at epsilon 1, 3, 8 and without DP, on two
         disjoint seeded synthetic corpora (5 classes, ``--rows`` rows each, generated here).
         The DP rows run ``--utility-mode`` (default auto: ghost clipping on a CPU, as a
         job would; ``hooks`` reproduces the figures recorded in docs/finetuning.md).
canary   The memorization check (appliance/training/canary.py): a random secret planted
         ``--canary-times`` times in a LoRA dataset; its exposure after training without DP
         and with DP at epsilon 8 (same epochs, batch and learning rate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.training import LabeledText, PromptCompletion, TrainingSpec, train  # noqa: E402

# ---------------------------------------------------------------- synthetic corpora

CORPORA: dict[str, dict[str, list[str]]] = {
    "support": {
        "billing": ["invoice", "refund", "charge", "payment", "receipt", "overcharged", "billing", "price"],
        "technical": ["crash", "error", "login", "bug", "timeout", "freeze", "password", "update"],
        "shipping": ["parcel", "delivery", "courier", "tracking", "package", "shipment", "arrived", "address"],
        "account": ["profile", "username", "settings", "email", "subscription", "plan", "upgrade", "close"],
        "feedback": ["love", "great", "suggestion", "feature", "thanks", "improve", "happy", "idea"],
    },
    "news": {
        "sports": ["match", "goal", "league", "coach", "season", "striker", "tournament", "referee"],
        "science": ["experiment", "molecule", "telescope", "genome", "physics", "laboratory", "theory", "data"],
        "weather": ["storm", "rain", "forecast", "snow", "temperature", "wind", "sunny", "flood"],
        "cooking": ["recipe", "oven", "garlic", "bake", "flavour", "simmer", "dough", "spice"],
        "politics": ["election", "senate", "vote", "minister", "policy", "campaign", "parliament", "law"],
    },
}
FILLER = ["the", "a", "today", "again", "really", "about", "my", "this", "very", "some", "just", "still"]
TEMPLATES = [
    "{f1} {k1} {f2} {k2} {f3}",
    "{f1} {f2} {k1} and {k2}",
    "{k1} {f1} {d} {f2}",
    "{f1} {d} {k1} {f2} {f3}",
]


def synthetic(corpus: str, rows: int, seed: int) -> list[LabeledText]:
    """Seeded rows: class keywords among shared filler, with a distractor keyword from another
    class in about a third of them and 5% label noise, so no model reaches 100%."""
    rng = random.Random(seed)
    classes = CORPORA[corpus]
    names = sorted(classes)
    out = []
    for _ in range(rows):
        label = rng.choice(names)
        other = rng.choice([n for n in names if n != label])
        words = {
            "k1": rng.choice(classes[label]),
            "k2": rng.choice(classes[label] if rng.random() < 0.6 else classes[other]),
            "d": rng.choice(classes[other]) if rng.random() < 0.35 else rng.choice(FILLER),
            "f1": rng.choice(FILLER),
            "f2": rng.choice(FILLER),
            "f3": rng.choice(FILLER),
        }
        text = rng.choice(TEMPLATES).format(**words)
        if rng.random() < 0.05:
            label = rng.choice(names)
        out.append(LabeledText(text, label))
    return out


# ---------------------------------------------------------------- helpers


def minilm() -> Path:
    from appliance.models.store import minilm_directory

    return minilm_directory()


def smollm2(store: Path) -> Path:
    from appliance.models.store import ModelStore

    return ModelStore(store).ensure_smollm2()


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- speed


def one_speed(args: argparse.Namespace) -> dict[str, Any]:
    """One task x mode in this process (called through ``--one``)."""
    from appliance.training.engine import Run

    device = "cuda" if torch.cuda.is_available() else "cpu"
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    text = " ".join(words[i % len(words)] for i in range(args.seq * 2))
    n = max(args.batch * 4, 64)
    if args.one_task == "classifier":
        rows: list[Any] = [LabeledText(text, "ab"[i % 2]) for i in range(n)]
        spec = TrainingSpec(
            task="classifier", base_model_dir=minilm(), target_epsilon=8, delta=1e-5, batch_size=args.batch,
            max_physical_batch=args.batch, max_seq_len=args.seq, train_top_layers=args.top_layers,
            holdout_fraction=0, dp_mode=args.one_mode, device=device,
        )  # fmt: skip
    else:
        rows = [PromptCompletion(text[: args.seq * 2], text) for _ in range(n)]
        spec = TrainingSpec(
            task="lora", base_model_dir=smollm2(args.store), target_epsilon=8, delta=1e-5, batch_size=args.batch,
            max_physical_batch=args.batch, max_seq_len=args.seq, holdout_fraction=0, dp_mode=args.one_mode,
            device=device, lora_rank=16, lora_alpha=32, lora_target_modules=("q_proj", "v_proj"),
        )  # fmt: skip
    run = Run(spec, rows, rank=0, world=1)
    batch = torch.arange(args.batch)
    cuda = run.device.type == "cuda"
    before = rss_mib()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    for _ in range(args.warmup):
        run._step(batch)
    times = []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run._step(batch)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
        total = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "task": args.one_task, "mode": run.mode, "device": str(run.device), "step_s": statistics.median(times),
        "train_peak_mib": round(peak, 1), "process_peak_mib": round(total, 1),
        "trainable_parameters": sum(p.numel() for p in run.trainable.values()),
    }  # fmt: skip


GPU_TARGET = 1.5
"""The issue's target: the default mode of each task at most this x the non-DP step time on a GPU."""
SPEED_MODES = ("off", "hooks", "ghost", "auto")


def verdict(results: list[dict[str, Any]], task: str) -> str:
    """``auto`` against the GPU target, for ``task``'s rows of :func:`speed`."""
    auto = next((r for r in results if r["task"] == task and r["mode"] == "auto"), None)
    if auto is None:
        return "not measured"
    if not str(auto["device"]).startswith("cuda"):
        return f"not measurable: no GPU (CPU: auto = {auto['resolved']}, {auto['time_vs_off']:.2f}x)"
    ratio = auto["time_vs_off"]
    met = "meets" if ratio <= GPU_TARGET else "misses"
    return f"{met} the {GPU_TARGET}x target: auto = {auto['resolved']}, {ratio:.2f}x on {auto['device']}"


def speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for task in args.tasks:
        rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in SPEED_MODES}
        for r in range(args.rounds):
            for mode in SPEED_MODES:
                cmd = [
                    sys.executable, __file__, "--one", task, mode, "--batch", str(args.batch_of[task]),
                    "--seq", str(args.seq_of[task]), "--steps", str(args.steps), "--warmup", str(args.warmup),
                    "--top-layers", str(args.top_layers), "--store", str(args.store), "--threads", str(args.threads),
                ]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
                if out.returncode != 0:
                    log(f"{task}/{mode} failed:\n{out.stderr[-2000:]}")
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[mode].append(row)
                log(f"speed round {r + 1}: {json.dumps(row)}")
        if not rows["off"]:
            continue
        base_t = statistics.median(x["step_s"] for x in rows["off"])
        base_m = statistics.median(x["train_peak_mib"] for x in rows["off"])
        for mode in SPEED_MODES:
            if not rows[mode]:
                continue
            t = statistics.median(x["step_s"] for x in rows[mode])
            m = statistics.median(x["train_peak_mib"] for x in rows[mode])
            results.append({
                "task": task, "mode": mode, "resolved": rows[mode][0]["mode"], "device": rows[mode][0]["device"],
                "batch": args.batch_of[task],
                "seq": args.seq_of[task], "step_ms": round(t * 1000, 1), "time_vs_off": round(t / base_t, 2),
                "train_peak_mib": round(m, 1), "mem_vs_off": round(m / base_m, 2) if base_m > 0 else None,
                "trainable_parameters": rows[mode][0]["trainable_parameters"],
            })  # fmt: skip
    print("\n## step time and peak memory (median over rounds; memory = growth during training steps)")
    header = ("task", "mode", "device", "batch", "seq", "step ms", "x off", "peak MiB", "x off")
    print("{:<11}{:<13}{:<8}{:>6}{:>5}{:>10}{:>7}{:>10}{:>7}".format(*header))
    for r in results:
        mem = "" if r["mem_vs_off"] is None else f"{r['mem_vs_off']:.2f}"
        mode = f"auto={r['resolved']}" if r["mode"] == "auto" else r["mode"]
        print(
            f"{r['task']:<11}{mode:<13}{r['device']:<8}{r['batch']:>6}{r['seq']:>5}{r['step_ms']:>10.1f}"
            f"{r['time_vs_off']:>7.2f}{r['train_peak_mib']:>10.1f}{mem:>7}"
        )
    print(f"\n## default mode (auto) against the {GPU_TARGET}x GPU target")
    for task in args.tasks:
        print(f"{task:<11}{verdict(results, task)}")
    return results


# ---------------------------------------------------------------- utility


def utility(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    settings: list[tuple[str, float]] = [("off", 0.0), ("eps1", 1.0), ("eps3", 3.0), ("eps8", 8.0)]
    for corpus in ("support", "news"):
        rows = synthetic(corpus, args.rows, seed=7 if corpus == "support" else 11)
        accuracy: dict[str, float] = {}
        for name, epsilon in settings:
            spec = TrainingSpec(
                task="classifier", base_model_dir=minilm(), target_epsilon=epsilon or 8.0, delta=1 / (2 * args.rows),
                epochs=args.epochs, batch_size=args.utility_batch, learning_rate=args.lr, max_seq_len=32,
                train_top_layers=0, holdout_fraction=0.2, dp_mode="off" if name == "off" else args.utility_mode, seed=0,
                device="auto",
            )  # fmt: skip
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as tmp:
                result = train(spec, rows, Path(tmp) / "m")
            accuracy[name] = result.card.metrics["holdout_accuracy"]
            row = {
                "corpus": corpus, "setting": name, "mode": result.card.dp_mode, "epsilon": result.card.epsilon,
                "accuracy": accuracy[name],
                "noise_multiplier": result.card.noise_multiplier, "steps": result.card.steps,
                "seconds": round(time.monotonic() - started, 1),
            }  # fmt: skip
            log(f"utility: {json.dumps(row)}")
            results.append(row)
        for row in results:
            if row["corpus"] == corpus:
                row["vs_off"] = round(row["accuracy"] / accuracy["off"], 3)
    print(f"\n## held-out accuracy, MiniLM head, {args.rows} rows/corpus (20% held out), {args.epochs} epochs,")
    print(f"## expected batch {args.utility_batch}, lr {args.lr}, delta 1/(2n), DP mode {args.utility_mode}")
    print(f"{'corpus':<9}{'setting':<8}{'mode':<7}{'epsilon':>9}{'accuracy':>10}{'x no-DP':>9}{'sigma':>8}{'steps':>7}")
    for r in results:
        eps = "inf" if r["epsilon"] == float("inf") else f"{r['epsilon']:.2f}"
        print(
            f"{r['corpus']:<9}{r['setting']:<8}{r['mode']:<7}{eps:>9}{r['accuracy']:>10.3f}{r['vs_off']:>9.3f}"
            f"{r['noise_multiplier']:>8.3f}{r['steps']:>7}"
        )
    return results


# ---------------------------------------------------------------- canary


def canary(args: argparse.Namespace) -> list[dict[str, Any]]:
    from appliance.training.canary import exposure, plant, random_secret

    rng = random.Random(args.canary_seed)
    secret = random_secret(rng)
    if args.canary_corpus == "orders":
        cities = ["Oslo", "Lima", "Pune", "Kyiv", "Rome", "Doha", "Bern", "Riga"]
        base_rows = [
            PromptCompletion(f"Which city is order {rng.randint(1000, 9999)} going to?", f"To {rng.choice(cities)}.")
            for _ in range(args.canary_rows)
        ]
    else:  # a disjoint corpus: other prompts, other answers
        states = ["open", "closed", "waiting for you", "escalated", "resolved"]
        base_rows = [
            PromptCompletion(f"What is the status of ticket T-{rng.randint(100, 999)}?", f"It is {rng.choice(states)}.")
            for _ in range(args.canary_rows)
        ]
    rows = plant(base_rows, secret, args.canary_times)
    model = smollm2(args.store)
    results = []
    before = exposure(model, secret, candidates=args.candidates)
    results.append({"setting": "base model", "exposure": before.exposure, "rank": before.rank})
    for name, mode in (("no DP", "off"), ("DP eps 8", "auto")):
        spec = TrainingSpec(
            task="lora", base_model_dir=model, target_epsilon=8.0, delta=1 / (2 * len(rows)), epochs=args.canary_epochs,
            batch_size=args.canary_batch, learning_rate=args.canary_lr, max_seq_len=64, holdout_fraction=0,
            dp_mode=mode, lora_rank=8, device="auto",
            lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        )  # fmt: skip
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(spec, rows, Path(tmp) / "m")
            found = exposure(result.output_dir, secret, candidates=args.candidates)
        row = {
            "setting": name, "exposure": found.exposure, "rank": found.rank, "epsilon": result.card.epsilon,
            "seconds": round(time.monotonic() - started, 1),
        }  # fmt: skip
        log(f"canary: {json.dumps(row)}")
        results.append(row)
    print(f"\n## canary exposure ({args.canary_corpus} corpus, seed {args.canary_seed}): secret planted")
    print(f"## {args.canary_times}x in {len(rows)} rows, ranked among")
    print(f"## {args.candidates} random secrets (highest possible exposure {math.log2(args.candidates + 1):.2f})")
    for r in results:
        print(f"{r['setting']:<12} exposure {r['exposure']:6.2f}  rank {r['rank']:>4}")
    return results


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="speed,utility,canary")
    p.add_argument("--tasks", default="classifier,lora")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--utility-batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--utility-mode", choices=("auto", "hooks", "ghost"), default="auto",
        help="DP mode of the utility runs (auto: what a job runs; hooks: as the recorded figures)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=0, help="speed batch (default: 32 classifier, 8 lora)")
    p.add_argument("--seq", type=int, default=0, help="speed sequence length (default: 64 classifier, 64 lora)")
    p.add_argument("--top-layers", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--canary-rows", type=int, default=16)
    p.add_argument("--canary-times", type=int, default=8)
    p.add_argument("--canary-epochs", type=int, default=15)
    p.add_argument("--canary-batch", type=int, default=4)
    p.add_argument("--canary-lr", type=float, default=2e-2)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--canary-corpus", choices=("orders", "tickets"), default="orders")
    p.add_argument("--canary-seed", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--store", type=Path, default=ROOT / ".pytest_cache" / "d" / "appliance-model-store")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    p.add_argument("--one", nargs=2, metavar=("TASK", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    args.batch_of = {"classifier": args.batch or (64 if cuda else 32), "lora": args.batch or (16 if cuda else 8)}
    args.seq_of = {"classifier": args.seq or (128 if cuda else 64), "lora": args.seq or (256 if cuda else 64)}
    if args.one:
        args.one_task, args.one_mode = args.one
        args.batch, args.seq = args.batch or 8, args.seq or 64
        print(json.dumps(one_speed(args)))
        return
    args.tasks = args.tasks.split(",")
    figures: dict[str, Any] = {"device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads()}
    started = time.monotonic()
    for section in args.sections.split(","):
        figures[section] = {"speed": speed, "utility": utility, "canary": canary}[section](args)
        if section == "speed":
            figures["gpu_target"] = {task: verdict(figures["speed"], task) for task in args.tasks}
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n# total {figures['seconds']} s on {figures['device']} ({figures['threads']} threads)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
