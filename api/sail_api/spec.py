"""The SAILRun spec: the single source of truth for the CRD, the operator and the trainer.

The spec has two parts. The *algorithm* part (`model`, `seedPairs`, `prompts`, `sail`) is
read by the trainer and is fixed when a run starts (committed as run.json). The *execution*
part (storage, pod template, resources, parallelism, retries, suspend, targets) is read by
the operator or the local executor and may change while a run is going: it applies from
the next phase attempt. Defaults and formulas: docs/method.md; every value that
the paper leaves open is marked "(choice)" in its description.

This module holds data and validation only: no I/O, no Kubernetes, no torch.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sail_api.uris import UriKind, classify_uri

API_GROUP = "sail.dev"
API_VERSION = "v1alpha1"
KIND = "SAILRun"
PLURAL = "sailruns"
MAX_RUN_NAME_LENGTH = 40  # child Job names are `{run}-i{NNN}-{phase}-a{A}` and must stay <= 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")


class ApiModel(BaseModel):
    """Base for every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        frozen=False,
    )


Precision = Literal["fp32", "bf16", "fp16"]
PipelineLayout = Literal["auto", "sd15", "sdxl"]
SeedFormat = Literal["auto", "jsonl", "parquet", "pickapic"]
PromptFormat = Literal["auto", "text", "jsonl", "parquet"]
SamplerKind = Literal["ddpm", "ddim", "euler", "euler_ancestral", "dpmsolver"]
OptimizerKind = Literal["adamw", "adafactor"]
LrSchedule = Literal["constant", "constant_with_warmup", "linear", "cosine"]
JudgeReference = Literal["base", "previous", "step0"]


# ---------------------------------------------------------------- algorithm part


class ModelSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="Base diffusers pipeline: an s3:// folder, a local folder, or a hub id where the "
        "cluster can reach a hub. Must hold model_index.json in the diffusers layout.",
    )
    layout: PipelineLayout = Field(
        "auto", description="Pipeline layout: sd15 (one text encoder), sdxl (two text encoders, "
        "pooled embeddings, add_time_ids), or auto (read from model_index.json)."
    )
    precision: Precision = Field(
        "bf16", description="Compute precision for generation and training (fp32 on CPU); annotation uses "
        "sail.annotationPrecision."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")


class SeedPairsSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="Human-labelled seed pairs: a JSONL or Parquet file with prompt, winner, loser "
        "(image paths relative to the file, URIs, or bytes), or Pick-a-Pic v2 Parquet "
        "(caption, jpg_0, jpg_1, label_0; ties dropped).",
    )
    format: SeedFormat = Field("auto", description="File format; auto picks by extension and columns.")
    limit: int | None = Field(
        None, ge=1, description="Use at most this many pairs (the first ones); unset uses all."
    )


class PromptsSpec(ApiModel):
    uri: str = Field(min_length=1, description="Prompt pool: a text file (one per line), JSONL or Parquet.")
    format: PromptFormat = Field("auto", description="File format; auto picks by extension.")
    column: str = Field("prompt", min_length=1, description="Column (Parquet) or key (JSONL) holding the prompt.")


class SamplerSpec(ApiModel):
    kind: SamplerKind = Field("ddpm", description="Scheduler used to generate candidates (paper SD1.5: DDPM).")
    steps: int = Field(50, ge=1, le=1000, description="Denoising steps per sample (paper SD1.5: 50).")
    guidance_scale: float = Field(
        7.5, ge=0.0, le=50.0, description="Classifier-free guidance scale (paper SD1.5: 7.5, SDXL: 5)."
    )
    resolution: int = Field(
        512, ge=8, le=4096, multiple_of=8, description="Image side in pixels (SD1.5: 512, SDXL: 1024)."
    )
    batch_size: int = Field(8, ge=1, le=1024, description="Images generated per forward batch (below "
                            "candidatesPerPrompt a prompt's candidates are split over batches); rows per UNet call "
                            "in annotate.")


class OptimizerSpec(ApiModel):
    kind: OptimizerKind = Field("adamw", description="AdamW (SD1.5 reference) or Adafactor (SDXL reference).")
    learning_rate: float | None = Field(
        None, gt=0.0, le=1.0,
        description="Learning rate; unset uses the reference rule 1e-8 x effective batch "
        "(1.28e-6 at 128 pairs).",
    )
    weight_decay: float = Field(1e-2, ge=0.0, le=1.0, description="Decoupled weight decay.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, gt=0.0, le=1.0, description="AdamW epsilon.")
    schedule: LrSchedule = Field("constant_with_warmup", description="Learning-rate schedule.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient-norm clip.")


class TrainSpec(ApiModel):
    effective_batch: int = Field(
        128, ge=1, description="Pairs per optimizer step across all devices and accumulation (paper: 128)."
    )
    micro_batch: int = Field(
        8, ge=1, description="Pairs per device per forward/backward; accumulation = effective / (micro x devices)."
    )
    steps: int | None = Field(
        None, ge=1, description="Optimizer steps per round; unset = one pass over the round's mixture (choice)."
    )
    step0_steps: int | None = Field(
        None, ge=1, description="Optimizer steps of step 0; unset = one pass over the seed pairs (choice)."
    )
    empty_prompt_probability: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of prompts blanked to '' during training (reference: 0.2)."
    )
    random_flip: bool = Field(True, description="Random horizontal flip of encoded real seed images.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (SDXL reference: on).")
    checkpoint_every: int = Field(
        100, ge=1, description="Save a resumable step checkpoint every this many optimizer steps."
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer and schedule.")


class RewardTimestepsSpec(ApiModel):
    """Where on the noise schedule the implicit reward's M draws fall (fractions of its T steps)."""

    min_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Lowest timestep drawn, as a fraction of the schedule (default 0)."
    )
    max_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Highest timestep drawn (exclusive), as a fraction (default 1)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RewardTimestepsSpec:
        if self.min_fraction >= self.max_fraction:
            raise ValueError(
                f"sail.rewardTimesteps.minFraction ({self.min_fraction}) must be below "
                f"sail.rewardTimesteps.maxFraction ({self.max_fraction})"
            )
        return self

    def bounds(self, num_train_timesteps: int) -> tuple[int, int]:
        """Integer `[low, high)` timesteps of a `num_train_timesteps` schedule; never empty."""
        low = min(int(self.min_fraction * num_train_timesteps), num_train_timesteps - 1)
        high = max(low + 1, min(num_train_timesteps, round(self.max_fraction * num_train_timesteps)))
        return low, high


class ValidationSpec(ApiModel):
    """Held-out human pairs: never trained on; every train phase and every round's judge is measured on them."""

    fraction: float = Field(
        0.05, ge=0.0, lt=1.0,
        description="Share of the seed pairs held out (prompt-disjoint, deterministic from sail.seed); 0 turns "
        "held-out evaluation off. Default 0.05 (choice, capped by maxPairs; docs/trainer.md). Ignored when uri is set.",
    )
    max_pairs: int = Field(
        500, ge=1, description="At most this many held-out pairs (default 500: +-2.2 points of accuracy at one "
        "standard error; a few minutes of UNet passes per phase on one GPU).",
    )
    uri: str | None = Field(
        None, min_length=1, description="Separate held-out pairs (same formats as seedPairs.uri); when set, no "
        "seed pair is held out.",
    )
    format: SeedFormat = Field("auto", description="Format of uri; auto picks by extension and columns.")


class SAILSpec(ApiModel):
    rounds: int = Field(3, ge=0, le=100, description="SAIL rounds K after step 0 (paper: SD1.5 3, SDXL 2).")
    prompts_per_round: int = Field(
        10000, ge=1, description="Fresh prompts per round, disjoint from earlier rounds (paper: 10K)."
    )
    candidates_per_prompt: int = Field(8, ge=2, le=256, description="N samples generated per prompt.")
    reward_draws: int = Field(
        10, ge=1, le=1000, description="M (t, noise) draws shared by a prompt's candidates for the implicit reward."
    )
    alpha: float = Field(
        0.25, ge=0.0, le=1.0, description="Probability that a mixture pair is self-labelled (else a human seed pair)."
    )
    beta: float = Field(5000.0, gt=0.0, description="Diffusion-DPO temperature (reference code: 5000; paper SD1.5: 2000).")
    reward_timesteps: RewardTimestepsSpec = Field(
        default_factory=RewardTimestepsSpec,
        description="Timestep range of the reward draws; default the whole schedule (docs/method.md). "
        "The upper half carries most of the preference signal for global attributes (docs/results.md).",
    )
    judge_reference: JudgeReference = Field(
        "base", description="Reference model of the implicit reward: base (choice), previous round, or step0."
    )
    annotation_precision: Precision = Field(
        "fp32", description="Compute precision of annotate's two UNets (the implicit reward). fp32 (choice, "
        "measured): a round's update is mostly below bf16's rounding step, and bf16 changed a third of the "
        "best/worst picks of a SAIL-sized update (docs/trainer.md). bf16 is faster."
    )
    margin_threshold: float | None = Field(
        None, ge=0.0, description="Drop self pairs whose reward margin is below this (choice; off by default)."
    )
    self_pair_cap: int | None = Field(
        None, ge=1, description="Keep at most this many self pairs per round, highest margin first."
    )
    mixture_size: int | None = Field(
        None, ge=1, description="Pairs in a round's mixture; unset = self pairs / alpha (choice)."
    )
    replay_self_pairs: bool = Field(False, description="Also draw earlier rounds' self pairs (choice; off).")
    seed: int = Field(0, ge=0, description="Run seed: generation, draws and mixture are deterministic from it.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="Candidate generation settings.")
    validation: ValidationSpec = Field(
        default_factory=ValidationSpec,
        description="Held-out human pairs for the held-out accuracy of every train phase and the judge trust of "
        "every round (docs/trainer.md).",
    )
    train: TrainSpec = Field(default_factory=TrainSpec, description="Diffusion-DPO training settings.")

    @model_validator(mode="after")
    def _micro_batch_fits(self) -> SAILSpec:
        if self.train.micro_batch > self.train.effective_batch:
            raise ValueError(
                f"sail.train.microBatch ({self.train.micro_batch}) must not exceed "
                f"sail.train.effectiveBatch ({self.train.effective_batch})"
            )
        return self


_SCORER_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CALLABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class ClipScorerSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        description="A transformers folder (local path or s3:// URI) holding a CLIPModel (config.json, weights) "
        "and its processor/tokenizer (preprocessor_config.json, tokenizer files), as PickScore is published; "
        "score = logit_scale x cosine(image embedding, text embedding).",
    )


class ScorerSpec(ApiModel):
    """One scorer of the evaluate phase: exactly one of `callable` and `clip`."""

    name: str = Field(
        min_length=1, max_length=40, json_schema_extra={"pattern": _SCORER_NAME.pattern},
        description="Name in status, metrics (label `scorer`) and the report: lower-case letters, digits and '-'.",
    )
    callable: str | None = Field(
        None, json_schema_extra={"pattern": _CALLABLE.pattern},
        description="`module:function` importable in the trainer image, called as "
        "function(images: list[PIL.Image], captions: list[str]) -> one float per image (higher is better).",
    )
    clip: ClipScorerSpec | None = Field(None, description="A CLIP-family preference model (PickScore layout).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SCORER_NAME.match(value):
            raise ValueError(f"scorer name {value!r}: use lower-case letters, digits and '-' (e.g. pickscore)")
        return value

    @field_validator("callable")
    @classmethod
    def _callable(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.match(value):
            raise ValueError(f"{value!r} is not `module:function` (e.g. my_scorers.aesthetic:score)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScorerSpec:
        if (self.callable is None) == (self.clip is None):
            raise ValueError(f"scorer {self.name!r}: set exactly one of callable and clip")
        return self


class EvaluationSpec(ApiModel):
    """The evaluate phase (opt-in): fixed-seed samples of the base, theta_{i-1} and theta_i on held-out
    prompts, scored by every scorer after every train phase."""

    scorers: list[ScorerSpec] = Field(
        min_length=1, description="Scorers; each image is scored by every one (names unique).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    prompts: PromptsSpec | None = Field(
        None, description="Evaluation prompts; unset uses the held-out validation pairs' captions (sail.validation).",
    )
    count: int = Field(
        64, ge=1, le=100000, description="Samples per model: (prompt, seed) pairs, prompts taken in turn (choice: 64).",
    )
    seed: int = Field(0, ge=0, description="Seed of the evaluation samples: the same (prompt, seed) pairs every round.")
    shards: int = Field(1, ge=1, le=1024, description="Shards (Indexed Job completions) of the evaluate phase.")

    @field_validator("scorers")
    @classmethod
    def _unique(cls, value: list[ScorerSpec]) -> list[ScorerSpec]:
        names = [s.name for s in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"scorer names must be unique; repeated: {', '.join(repeated)}")
        return value


class AlgorithmSpec(ApiModel):
    """The part of the spec the trainer reads; fixed for the life of a run (run.json)."""

    model: ModelSpec = Field(description="Base diffusers pipeline to align (also the judge reference by default).")
    seed_pairs: SeedPairsSpec = Field(description="Human-labelled seed pairs: step 0 trains on them, every mixup reuses them.")
    prompts: PromptsSpec = Field(description="Prompt pool; each round draws fresh prompts from it, disjoint from earlier rounds.")
    sail: SAILSpec = Field(default_factory=SAILSpec, description="SAIL algorithm settings (defaults: docs/method.md).")
    evaluation: EvaluationSpec | None = Field(
        None, description="Opt-in evaluate phase after every train phase: external scorers on held-out prompts "
        "(docs/trainer.md); unset runs no evaluate phase.",
    )


# ---------------------------------------------------------------- execution part


class SecretRef(ApiModel):
    name: str = Field(
        min_length=1, max_length=253,
        description="Secret in the run's namespace with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY keys.",
    )


class StorageSpec(ApiModel):
    uri: str | None = Field(
        None,
        description="Run root: s3://bucket/prefix on a cluster; a local folder for `sail run` "
        "(unset: a folder next to the SAILRun file). Immutable once set.",
    )
    endpoint: str | None = Field(None, description="S3 endpoint URL for non-AWS stores (MinIO, Ceph...).")
    region: str | None = Field(None, description="S3 region.")
    credentials_secret_ref: SecretRef | None = Field(
        None, description="Secret holding S3 credentials; never put keys in the spec."
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str | None) -> str | None:
        if value is not None and classify_uri(value) is UriKind.UNSUPPORTED:
            raise ValueError(f"storage.uri {value!r}: only s3:// URIs or local paths are supported")
        return value


class EnvVar(ApiModel):
    name: str = Field(min_length=1, description="Environment variable name.")
    value: str = Field("", description="Literal value. Use credentialsSecretRef for secrets, never env.")


class Toleration(ApiModel):
    key: str | None = Field(None, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect.")
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")


class PodTemplateSpec(ApiModel):
    image: str = Field("ghcr.io/sail-dev/sail-trainer:0.1.0", min_length=1, description="Trainer image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy."
    )
    service_account_name: str | None = Field(
        None, description="Workload ServiceAccount; unset uses the chart's (no API token mounted)."
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment for the trainer.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector for phase pods.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for phase pods.")
    priority_class_name: str | None = Field(None, description="PriorityClass of phase pods.")
    run_as_user: int | None = Field(None, ge=1, description="Non-root UID of the trainer (default: image's).")


class ResourceRequirements(ApiModel):
    requests: dict[str, str] = Field(default_factory=dict, description="Resource requests, e.g. cpu, memory.")
    limits: dict[str, str] = Field(default_factory=dict, description="Limits, e.g. nvidia.com/gpu: '1'.")

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            if not _QUANTITY.match(str(quantity)):
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 500m, 16Gi, 1)")
        return value


class PhaseResources(ApiModel):
    generate: ResourceRequirements = Field(default_factory=ResourceRequirements, description="generate pods.")
    annotate: ResourceRequirements = Field(default_factory=ResourceRequirements, description="annotate pods.")
    mixup: ResourceRequirements = Field(default_factory=ResourceRequirements, description="mixup pods.")
    train: ResourceRequirements = Field(default_factory=ResourceRequirements, description="train pods.")
    evaluate: ResourceRequirements = Field(default_factory=ResourceRequirements, description="evaluate pods.")


class ParallelismSpec(ApiModel):
    generate_shards: int = Field(1, ge=1, le=1024, description="Shards (Indexed Job completions) of generate.")
    annotate_shards: int = Field(1, ge=1, le=1024, description="Shards of annotate.")
    train_nodes: int = Field(1, ge=1, le=256, description="Pods of a multi-node train (torchrun rendezvous).")
    gpus_per_node: int = Field(1, ge=0, le=16, description="GPUs per train pod (processes per pod).")


class BackoffSpec(ApiModel):
    initial_seconds: float = Field(10.0, ge=0.0, description="First retry delay.")
    max_seconds: float = Field(600.0, ge=0.0, description="Cap on the retry delay.")
    factor: float = Field(2.0, ge=1.0, description="Growth of the delay per attempt.")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="Random +- fraction of the delay.")


class FailurePolicySpec(ApiModel):
    app_retries: int = Field(
        2, ge=0, le=100, description="Retries of a phase after failures of the trainer itself, per run."
    )
    infra_retries: int = Field(
        10, ge=0, le=1000,
        description="Retries after infrastructure failures (preemption, eviction, node loss), per run.",
    )
    backoff: BackoffSpec = Field(default_factory=BackoffSpec, description="Exponential backoff with jitter.")


class PerformanceSpec(ApiModel):
    """Speed levers of the trainer's UNet; they change speed, not what a phase computes (beyond
    floating-point rounding), so they are not part of the run's digest."""

    compile: bool = Field(
        False, description="torch.compile the UNets of generate, annotate and train (the first call "
        "compiles for minutes; worth it for long GPU phases, not for the toy quick start).",
    )
    channels_last: bool = Field(
        False, description="channels_last memory format for the UNets (faster convolutions on tensor cores).",
    )


GateMetric = Literal["heldout_accuracy_vs_base", "heldout_margin_vs_base"]
RegressionAction = Literal["stop", "continue"]


class RoundGateSpec(ApiModel):
    """Accept a round only if its held-out numbers do not regress (beyond the paper: off unless set)."""

    metric: GateMetric = Field(
        "heldout_accuracy_vs_base", description="Held-out metric of each train phase compared across iterations "
        "(needs held-out pairs: sail.validation).",
    )
    tolerance: float = Field(
        0.02, ge=0.0, description="A round regresses when its metric falls more than this below the best earlier "
        "iteration's.",
    )
    on_regression: RegressionAction = Field(
        "stop", description="stop: end the run at once, its best checkpoint in status.bestCheckpoint; continue: "
        "record the regression (condition RoundAccepted=False, Warning event) and go on.",
    )
    scorers: list[str] = Field(
        default_factory=list, description="spec.evaluation scorers also guarded: after round i's evaluate phase, "
        "the round regresses when theta_i's mean score of any of them falls more than scorerTolerance below "
        "theta_{i-1}'s on the same samples. Empty (default): the evaluate phase is not gated.",
    )
    scorer_tolerance: float = Field(
        0.0, ge=0.0, description="Allowed drop of a guarded scorer's mean score from theta_{i-1} to theta_i "
        "(in the scorer's units).",
    )


class SAILRunSpec(AlgorithmSpec):
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Where artifacts and checkpoints live.")
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec, description="Pod settings of phase Jobs.")
    resources: PhaseResources = Field(default_factory=PhaseResources, description="Per-phase resources.")
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec, description="Shards and train size.")
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec, description="Trainer speed levers.")
    queue_name: str | None = Field(
        None, max_length=63, description="Kueue LocalQueue: set as kueue.x-k8s.io/queue-name on every Job."
    )
    suspend: bool = Field(False, description="Pause the run after the running phase (no new Jobs).")
    failure_policy: FailurePolicySpec = Field(default_factory=FailurePolicySpec, description="Retry budgets.")
    start_iteration: int | None = Field(
        None, ge=0, description="Rewind: restart from this iteration (its inputs must be committed)."
    )
    round_gate: RoundGateSpec | None = Field(
        None, description="Opt-in round gate: stop (or flag) a round whose held-out metric regresses; unset runs "
        "every round as the paper does. Read by the planner only, so it may be set or changed while a run goes on.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Deadline of each phase Job; past it the attempt fails as an app failure."
    )

    def algorithm(self) -> AlgorithmSpec:
        return AlgorithmSpec(model=self.model, seed_pairs=self.seed_pairs, prompts=self.prompts, sail=self.sail,
                             evaluation=self.evaluation)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(description="Run name: a DNS label of at most 40 characters.")
    namespace: str | None = Field(None, description="Namespace.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > MAX_RUN_NAME_LENGTH:
            raise ValueError(
                f"metadata.name {value!r} has {len(value)} characters; at most {MAX_RUN_NAME_LENGTH} "
                "so that child Job names fit in 63"
            )
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"metadata.name {value!r} must be a DNS label: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value


class SAILRun(BaseModel):
    """A whole SAILRun object as found in a YAML file or returned by the API server."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    api_version: Literal["sail.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SAILRun"]
    metadata: ObjectMeta
    spec: SAILRunSpec
    status: SAILRunStatus | None = None


from sail_api.status import SAILRunStatus  # noqa: E402  (status imports ApiModel from here)

SAILRun.model_rebuild()
