"""The DP training engine: one call trains a classifier head or a LoRA adapter with Opacus.

DP-SGD as Opacus implements it: the noise multiplier that reaches the target epsilon after
the planned epochs (Opacus's ``get_noise_multiplier``, exactly what
``make_private_with_epsilon`` computes before it calls ``make_private``), Poisson sampling
draws every step's batch (each example independently, at rate ``1 / steps_per_epoch``), each
example's gradient is clipped to ``max_grad_norm`` and Gaussian noise is added before the
optimizer step. The epsilon reported is Opacus's accountant for the steps that actually ran.

Logical batches larger than ``max_physical_batch`` are split and accumulated the way
Opacus's ``BatchMemoryManager`` does (``signal_skip_step``), which changes memory, not the
privacy accounting.

Public and secret randomness. DP-SGD's guarantee holds only while the noise and the Poisson
subsampling are unknown to the adversary: whoever can replay them subtracts the noise and
knows which rows each step drew. So every run draws a **secret** from the operating system
(``secrets.randbits(63)``) and derives from it, and from nothing public, the noise generator
(per rank) and each epoch's sampling generator (per epoch and rank). The secret travels only
inside the run's checkpoints (sealed by the caller with the tenant's key), so a resumed run
draws the same batches and noise as an uninterrupted one; it is never on the card, in a
progress report or in a log. The spec's public ``seed`` controls what the guarantee does not
rest on: the initial weights of the new head or LoRA adapter and the held-out split (and any
other use of torch's global generator), so runs on the same data stay comparable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import math
import platform
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appliance.errors import ConfigError, InvalidInput
from appliance.training.accounting import epsilon_of, noise_multiplier_for
from appliance.training.devices import (
    autocast,
    autocast_dtype,
    bf16_supported,
    grad_samples_to_fp32,
    resolve_device,
)
from appliance.training.lora import per_sequence_loss
from appliance.training.modes import Resolved, choose_mode
from appliance.training.spec import (
    CheckpointSink,
    Example,
    HistoryEntry,
    ModelCard,
    Progress,
    TrainingCancelled,
    TrainingResult,
    TrainingSpec,
)
from appliance.training.tasks import TaskRun, build_task, trainable_count
from appliance.training.text import IGNORE

CHECKPOINT_FORMAT = 2
"""2: the run's secret is in the checkpoint. A format-1 checkpoint (batches and noise seeded
from the public seed) is refused: its run cannot be continued under a secret."""
_EPSILON_EVERY_S = {"rdp": 0.0, "prv": 2.0}
"""How often progress recomputes epsilon (PRV is slow to evaluate; RDP takes milliseconds)."""


def train(
    spec: TrainingSpec,
    examples: Sequence[Example],
    output_dir: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointSink | None = None,
    resume: bytes | None = None,
    secret: int | None = None,
) -> TrainingResult:
    """Train ``spec`` on ``examples`` and write the model into ``output_dir``.

    - ``output_dir`` must be empty or absent; on success it holds an HF-format directory the
      existing runners load (seal it, then delete it). On failure or cancel nothing is written.
    - ``on_progress`` is called once at the start and after every optimizer step, on the
      training thread.
    - ``should_stop`` is polled before every step; when it returns true the run raises
      :class:`~appliance.training.spec.TrainingCancelled` with the epsilon already spent.
    - ``checkpoints.save(step, bytes)`` receives the run's state per the spec's checkpoint
      interval; ``resume`` is such bytes, and the resumed run ends exactly as the
      interrupted one would have: same accountant history (so the same epsilon), same
      batches, same noise, because the checkpoint carries the run's secret. Bytes from
      another spec or dataset are refused. The bytes hold that secret: seal them.
    - ``secret`` is for tests only: a fixed secret makes a run repeatable. Left ``None``
      (always, in production) each run draws its own from the operating system; a resumed
      run takes the one in its checkpoint whatever is passed here.
    - ``spec.gpus > 1`` spreads the run over that many processes (Opacus ``DPDDP``, see
      :mod:`appliance.training.distributed`); the callbacks still run in this process.

    Raises :class:`~appliance.errors.InvalidInput` for examples that do not fit the task
    (wrong row type, fewer than two labels, no training rows), and
    :class:`~appliance.errors.ConfigError` when ``secure_mode`` lacks its RNG package.
    """
    _check_output_dir(output_dir)
    if not examples:
        raise InvalidInput("training needs at least one example")
    if secret is None:
        secret = draw_secret()
    if spec.gpus > 1:
        from appliance.training.distributed import train_distributed

        return train_distributed(
            spec, examples, output_dir, on_progress=on_progress, should_stop=should_stop,
            checkpoints=checkpoints, resume=resume, secret=secret,
        )  # fmt: skip
    run = Run(spec, examples, rank=0, world=1, secret=secret)
    return run.execute(
        output_dir, on_progress=on_progress, should_stop=should_stop, checkpoints=checkpoints, resume=resume
    )


def draw_secret() -> int:
    """A run's secret: 63 bits from the operating system's CSPRNG."""
    return secrets.randbits(63)


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise InvalidInput(f"training output directory {output_dir} must be absent or empty")


def dataset_fingerprint(spec: TrainingSpec, examples: Sequence[Example]) -> str:
    """Binds a checkpoint to its run: the spec fields that shape training, the base model's
    configuration (not its path, which may differ after a restart) and the rows."""
    shaping = {k: v for k, v in asdict(spec).items() if k not in _NOT_SHAPING}
    digest = hashlib.sha256(repr(sorted(shaping.items())).encode())
    config = spec.base_model_dir / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for example in examples:
        digest.update(repr(example).encode())
    return digest.hexdigest()


_NOT_SHAPING = {
    "base_model_dir",
    "device",
    "checkpoint_every_steps",
    "checkpoint_every_s",
    "gpus",
    "max_physical_batch",
    "base_model_name",
}


@dataclass
class _State:
    step: int = 0
    elapsed_s: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)


class Run:
    """One process's share of a run (the only one unless ``gpus > 1``). Every rank of a run
    gets the same ``secret`` (:func:`draw_secret` when none is given) and derives its own
    streams from it; :meth:`execute` with ``resume`` replaces it with the checkpoint's."""

    def __init__(
        self, spec: TrainingSpec, examples: Sequence[Example], *, rank: int, world: int, secret: int | None = None
    ) -> None:
        self.spec = spec
        self.rank = rank
        self.world = world
        self._secret = draw_secret() if secret is None else secret
        self.fingerprint = dataset_fingerprint(spec, examples)
        self.device = resolve_device(spec.device, local_rank=rank if world > 1 else 0)
        torch.manual_seed(spec.seed)  # public: the new head's or adapter's init, the held-out split
        self.task: TaskRun = build_task(spec, examples, self.device)
        if self.task.n_train < 1:
            raise InvalidInput("no rows are left to train on after the held-out share")
        self.trainable = {n: p for n, p in self.task.module.named_parameters() if p.requires_grad}
        physical = min(spec.max_physical_batch, spec.batch_size)
        self.mode: Resolved = choose_mode(
            spec.dp_mode, task=spec.task, trainable_parameters=trainable_count(self.task.module),
            physical_batch=physical,
            device=self.device,
        )  # fmt: skip
        self.autocast_dtype = autocast_dtype(
            self.mode, self.task.autocast, supported=bf16_supported(self.device)
        )  # fmt: skip
        self._setup()

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        spec = self.spec
        module: nn.Module = self.task.module
        if self.world > 1:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel
            from torch.nn.parallel import DistributedDataParallel

            module = (
                DifferentiallyPrivateDistributedDataParallel(module)
                if spec.private
                else DistributedDataParallel(module)
            )
        optimizer: Any = torch.optim.AdamW(list(self.trainable.values()), lr=spec.learning_rate, weight_decay=0.0)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(self.task.n_train)), batch_size=spec.batch_size
        )
        self.steps_per_epoch = len(loader)
        self.sample_rate = 1 / self.steps_per_epoch
        self.noise_multiplier = 0.0
        self.criterion: Any = None
        self.engine: Any = None
        self.noise_generator: torch.Generator | None = None
        if self.mode == "off":
            self.model, self.optimizer, self.sampler = module, optimizer, None
            return
        from opacus import PrivacyEngine

        try:
            with warnings.catch_warnings():  # the card records secure_mode; no need to nag at every job
                warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
                engine = PrivacyEngine(accountant=spec.accountant, secure_mode=spec.secure_mode)
        except ImportError as exc:
            raise ConfigError(
                "training.secure_mode needs the torchcsprng package (Opacus draws secure noise only from it), "
                f"which has no release for PyTorch 2.x: {exc}"
            ) from None
        if not spec.secure_mode:
            self.noise_generator = torch.Generator(self.device).manual_seed(_derive(self._secret, "noise", self.rank))
        # make_private_with_epsilon is get_noise_multiplier + make_private; the search is done
        # through the cached helper the ledger uses, so both agree to the last bit.
        noise = noise_multiplier_for(
            spec.target_epsilon, spec.delta, self.sample_rate, epochs=spec.epochs, accountant=spec.accountant
        )
        out = engine.make_private(
            module=module,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(ignore_index=IGNORE),
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=spec.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=self.mode,
            noise_generator=self.noise_generator,
        )
        if self.mode == "ghost":
            self.model, self.optimizer, self.criterion, dp_loader = out
        else:
            self.model, self.optimizer, dp_loader = out
        self.engine = engine
        self.sampler = dp_loader.batch_sampler
        # Opacus's samplers run int(1 / sample_rate) steps, which floating point can put one
        # short of the loader's length (93 batches -> 92 steps); run exactly one per batch.
        if hasattr(self.sampler, "num_batches"):
            self.sampler.num_batches = self.steps_per_epoch
        else:
            self.sampler.steps = self.steps_per_epoch
        self.noise_multiplier = float(self.optimizer.noise_multiplier)

    # ------------------------------------------------------------------ sampling

    def _epoch_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """Row indices of each step of ``epoch``, reproducible from (secret, epoch, rank)."""
        generator = torch.Generator().manual_seed(_derive(self._secret, "batches", epoch, self.rank))
        if self.sampler is None:
            order = torch.randperm(self.task.n_train, generator=generator)
            yield from torch.split(order, self.spec.batch_size)
            return
        if not self.spec.secure_mode:  # secure mode keeps Opacus's CSPRNG: batches then differ after a resume
            self.sampler.generator = generator
        if hasattr(self.sampler, "epoch"):
            self.sampler.epoch = epoch  # the distributed sampler's shard shuffle, the same on every rank
        for indices in self.sampler:
            yield torch.as_tensor(indices, dtype=torch.long)

    # ------------------------------------------------------------------ one step

    def _step(self, indices: torch.Tensor) -> float | None:
        self.model.train()
        if len(indices) == 0:
            self._empty_step()
            return None
        chunks: tuple[torch.Tensor, ...] = torch.split(indices, self.spec.max_physical_batch)
        total = 0.0
        for j, chunk in enumerate(chunks):
            last = j == len(chunks) - 1
            with autocast(self.device, self.autocast_dtype):
                logits, targets, shape = self.task.logits(self.model, chunk)
            logits = logits.float()
            if self.mode == "ghost":
                loss = self.criterion(logits, targets, shape=shape) if shape else self.criterion(logits, targets)
                value = float(loss.item())
            else:
                loss = _mean_loss(logits, targets, shape)
                value = float(loss.item())
                if self.mode == "off":
                    loss = loss * (len(chunk) / len(indices))
            with warnings.catch_warnings():
                # Opacus's hooks on modules whose inputs need no gradient (frozen layers below): expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                loss.backward()
            if self.mode == "hooks":  # bf16 per-sample gradients would be clipped in bf16 (devices.py)
                grad_samples_to_fp32(self.optimizer.params)
            total += value * len(chunk)
            if self.mode == "off":
                if last:
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                continue
            if not last:
                self.optimizer.signal_skip_step(do_skip=True)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return total / len(indices)

    def _empty_step(self) -> None:
        """A Poisson batch can be empty; DP-SGD still takes the step (noise only), and the
        accountant counts it, exactly as Opacus's own data loader would."""
        for p in self.optimizer.params:
            if self.mode == "ghost":
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()
        self.optimizer.zero_grad()

    # ------------------------------------------------------------------ the loop

    def execute(
        self,
        output_dir: Path,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoints: CheckpointSink | None = None,
        resume: bytes | None = None,
    ) -> TrainingResult:
        spec = self.spec
        total_steps = spec.epochs * self.steps_per_epoch
        state = self._restore(resume) if resume is not None else _State()
        started = time.monotonic() - state.elapsed_s
        run_started, first_step = time.monotonic(), state.step
        last_checkpoint_s, last_checkpoint_step = time.monotonic(), state.step
        epsilon, epsilon_at = self._epsilon(), time.monotonic()

        def report(loss: float | None, epoch: int) -> None:
            nonlocal epsilon, epsilon_at
            now = time.monotonic()
            if now - epsilon_at >= _EPSILON_EVERY_S[spec.accountant] or state.step == total_steps:
                epsilon, epsilon_at = self._epsilon(), now
            done_here = state.step - first_step
            eta = (now - run_started) / done_here * (total_steps - state.step) if done_here else None
            if on_progress is not None and self.rank == 0:
                on_progress(Progress(state.step, total_steps, epoch, loss, epsilon, now - started, eta))

        report(None, state.step // self.steps_per_epoch + 1)
        for epoch in range(state.step // self.steps_per_epoch, spec.epochs):
            skip = state.step - epoch * self.steps_per_epoch
            losses: list[float] = []
            for k, indices in enumerate(self._epoch_batches(epoch)):
                if k < skip:
                    continue
                if should_stop is not None and should_stop():
                    history = self._history()
                    raise TrainingCancelled(
                        steps=state.step,
                        epsilon_spent=epsilon_of(history, spec.delta, spec.accountant),
                        history=history,
                    )
                loss = self._step(indices)
                state.step += 1
                if loss is not None:
                    losses.append(loss)
                report(loss, epoch + 1)
                due_steps = (
                    spec.checkpoint_every_steps and state.step - last_checkpoint_step >= spec.checkpoint_every_steps
                )
                due_time = spec.checkpoint_every_s and time.monotonic() - last_checkpoint_s >= spec.checkpoint_every_s
                if checkpoints is not None and self.rank == 0 and (due_steps or due_time) and state.step < total_steps:
                    state.elapsed_s = time.monotonic() - started
                    checkpoints.save(state.step, self._snapshot(state))
                    last_checkpoint_s, last_checkpoint_step = time.monotonic(), state.step
            state.epoch_losses = losses
        wall = time.monotonic() - started
        self._release_hooks()
        metrics = self.task.evaluate()
        if state.epoch_losses:
            metrics["train_loss"] = sum(state.epoch_losses) / len(state.epoch_losses)
        history = self._history()
        card = self._card(state.step, history, metrics, wall)
        if self.rank == 0:
            output_dir.mkdir(parents=True, exist_ok=True)
            self.task.save(output_dir)
        return TrainingResult(output_dir, card, tuple(history))

    # ------------------------------------------------------------------ accounting

    def _history(self) -> list[HistoryEntry]:
        if self.engine is None:
            return []
        return [(float(s), float(q), int(n)) for s, q, n in self.engine.accountant.history]

    def _epsilon(self) -> float:
        if self.mode == "off":
            return math.inf
        return epsilon_of(self._history(), self.spec.delta, self.spec.accountant)

    def _card(self, steps: int, history: list[HistoryEntry], metrics: dict[str, float], wall: float) -> ModelCard:
        spec = self.spec
        private = self.mode != "off"
        return ModelCard(
            task=spec.task,
            base_model=spec.base_model_name or spec.base_model_dir.name,
            dataset_hash=spec.dataset_hash,
            epsilon=epsilon_of(history, spec.delta, spec.accountant) if private else math.inf,
            delta=spec.delta,
            target_epsilon=spec.target_epsilon if private else math.inf,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=steps,
            epochs=spec.epochs,
            accountant=spec.accountant,
            max_grad_norm=spec.max_grad_norm,
            dp_mode=self.mode,
            secure_mode=spec.secure_mode,
            train_examples=self.task.n_train,
            holdout_examples=getattr(self.task, "n_holdout", 0),
            metrics=metrics,
            wall_time_s=round(wall, 3),
            device=str(self.device),
            gpus=self.world,
            library_versions=_versions(spec.task),
            hyperparameters={
                "batch_size": spec.batch_size,
                "learning_rate": spec.learning_rate,
                "max_seq_len": spec.max_seq_len,
                "seed": spec.seed,
                **({"train_top_layers": spec.train_top_layers} if spec.task == "classifier" else {}),
                **(
                    {
                        "lora_rank": spec.lora_rank,
                        "lora_alpha": spec.lora_alpha,
                        "lora_target_modules": list(spec.lora_target_modules),
                    }
                    if spec.task == "lora"
                    else {}
                ),
            },
            labels=self.task.labels,
        )

    def _release_hooks(self) -> None:
        """Remove Opacus's hooks before the model is evaluated and saved."""
        for candidate in (self.model, getattr(self.model, "module", None)):
            close = getattr(candidate, "_close", None)
            if callable(close):
                close()

    # ------------------------------------------------------------------ checkpoints

    def _snapshot(self, state: _State) -> bytes:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "secret": self._secret,
            "step": state.step,
            "elapsed_s": state.elapsed_s,
            "noise_multiplier": self.noise_multiplier,
            "history": [list(h) for h in self._history()],
            "trainable": {n: p.detach().cpu().clone() for n, p in self.trainable.items()},
            "optimizer": self.optimizer.state_dict(),
            "noise_rng": self.noise_generator.get_state() if self.noise_generator is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def _restore(self, data: bytes) -> _State:
        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same error to the caller
            raise InvalidInput(f"the checkpoint cannot be read ({type(exc).__name__})") from None
        if isinstance(payload, dict) and payload.get("format") == 1:
            raise InvalidInput(
                "the checkpoint predates secret sampling and noise seeds (format 1); "
                "the run cannot be resumed under a secret and must be started again"
            )
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise InvalidInput("the checkpoint is not in a format this engine reads")
        if payload["fingerprint"] != self.fingerprint:
            raise InvalidInput("the checkpoint belongs to another run (its spec or dataset differs)")
        if not math.isclose(payload["noise_multiplier"], self.noise_multiplier, rel_tol=1e-9, abs_tol=1e-12):
            raise InvalidInput("the checkpoint was taken with a different noise multiplier")
        self._secret = int(payload["secret"])  # the sampling generators derive from it per epoch
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(payload["trainable"][name].to(p.device))
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.engine is not None:
            self.engine.accountant.history = [(float(s), float(q), int(n)) for s, q, n in payload["history"]]
        if self.noise_generator is not None and payload["noise_rng"] is not None:
            self.noise_generator.set_state(payload["noise_rng"])
        torch.set_rng_state(payload["torch_rng"])
        return _State(step=int(payload["step"]), elapsed_s=float(payload["elapsed_s"]))


def _mean_loss(logits: torch.Tensor, targets: torch.Tensor, shape: tuple[int, int] | None) -> torch.Tensor:
    """Mean over examples of each example's loss (a sequence's loss is its token mean)."""
    if shape is None:
        return nn.functional.cross_entropy(logits, targets)
    return per_sequence_loss(logits, targets, shape).mean()


def _derive(secret: int, purpose: str, *numbers: int) -> int:
    """A generator seed for one ``purpose`` (and epoch, rank) that reveals nothing of ``secret``
    or of the other streams: SHA-256 of them all, cut to 63 bits."""
    digest = hashlib.sha256("/".join([str(secret), purpose, *map(str, numbers)]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _versions(task: str) -> dict[str, str]:
    names = ["torch", "opacus", "transformers", *(["peft"] if task == "lora" else [])]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out
