"""temporal.yaml: the shipped file is valid, bad files are refused with the path and the reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.common import RetryPolicy

from infra.config.policy import Policy, PolicyError, WorkflowOptions, load_policy, parse_duration
from infra.config.settings import REPO_ROOT
from workflows.policy_options import activity_kwargs

SHIPPED = REPO_ROOT / "temporal.yaml"


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "temporal.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def base() -> dict[str, object]:
    return yaml.safe_load(SHIPPED.read_text())


def test_shipped_policy_is_valid() -> None:
    policy = load_policy(SHIPPED)
    assert policy.queue("chat") == "turnflow-chat"
    probe = policy.activities["probe_model"]
    assert probe.start_to_close == timedelta(seconds=60)
    assert probe.heartbeat == timedelta(seconds=10)
    assert probe.retry.non_retryable == ["ModelRequestRejected"]
    assert policy.schedules["stack-probe"].cron == "*/15 * * * *"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h", 3600), ("1d", 86400), (7, 7), ("PT5S", 5)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("bad", ["5 parsecs", "", "ms", True, None])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["activities"]["probe_model"].update(fallback=["nope"]), "unknown activity 'nope'"),
        (lambda d: d["activities"]["probe_model"].update(fallback=["probe_model"]), "names itself"),
        (lambda d: d["activities"]["probe_redis"].update(start_to_close="soon"), "not a duration"),
        (lambda d: d["activities"]["probe_redis"].update(timeout="5s"), "Extra inputs"),
        (lambda d: d["activities"]["probe_redis"]["retry"].update(backoff=0.5), "greater than or equal"),
        (lambda d: d["schedules"]["stack-probe"].update(cron="every day"), "cron must have 5 fields"),
        (lambda d: d["schedules"]["stack-probe"].update(workflow="ghost"), "not in workflows"),
        (lambda d: d["workflows"]["stack_probe"].update(task_queue="nowhere"), "not in task_queues"),
        (lambda d: d["workflows"]["stack_probe"]["activities"].append("ghost"), "unknown activity"),
        (lambda d: d.pop("task_queues"), "task_queues: Field required"),
        (lambda d: d.pop("models"), "chat turns need at least one model"),
        (lambda d: next(iter(d["models"].values())).update(fallback=["ghost"]), "unknown model 'ghost'"),
        (lambda d: next(iter(d["models"].values())).update(tier="tpu"), "Input should be 'gpu'"),
        (lambda d: d["breaker"].update(failure_rate=2), "less than or equal to 1"),
    ],
)
def test_invalid_policy_names_path_and_reason(tmp_path: Path, mutate: object, message: str) -> None:
    data = base()
    mutate(data)  # type: ignore[operator]
    path = write(tmp_path, data)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_field_path_is_reported(tmp_path: Path) -> None:
    data = base()
    data["activities"]["probe_redis"]["retry"]["maximum_attempts"] = "many"  # type: ignore[index]
    with pytest.raises(PolicyError, match=r"activities\.probe_redis\.retry\.maximum_attempts"):
        load_policy(write(tmp_path, data))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "absent.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(write(tmp_path, "a: [unclosed"))
    with pytest.raises(PolicyError, match="mapping at the top level"):
        load_policy(write(tmp_path, "- just\n- a list\n"))


def test_options_carry_fallbacks_transitively(tmp_path: Path) -> None:
    data = base()
    acts = data["activities"]
    acts["infer_cpu"] = {"start_to_close": "90s", "fallback": ["infer_canned"]}  # type: ignore[index]
    acts["infer_canned"] = {"start_to_close": "1s", "local": True}  # type: ignore[index]
    acts["probe_model"]["fallback"] = ["infer_cpu"]  # type: ignore[index]
    policy = load_policy(write(tmp_path, data))
    options = policy.options_for("stack_probe")
    assert set(options.activities) == {
        "probe_postgres",
        "probe_redis",
        "probe_model",
        "infer_cpu",
        "infer_canned",
    }
    assert options.execution_timeout == timedelta(minutes=3)


def test_options_survive_the_json_round_trip() -> None:
    """Workflow inputs carry options as JSON; what the worker decodes equals what was sent."""
    options = load_policy(SHIPPED).options_for("stack_probe")
    assert WorkflowOptions.model_validate_json(options.model_dump_json()) == options


def test_activity_kwargs_map_the_policy_onto_temporal() -> None:
    policy: Policy = load_policy(SHIPPED)
    kwargs = activity_kwargs(policy.activities["probe_model"])
    assert kwargs["start_to_close_timeout"] == timedelta(seconds=60)
    assert kwargs["retry_policy"] == RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
        non_retryable_error_types=["ModelRequestRejected"],
    )


def test_an_overlay_replaces_whole_sections_and_is_named_when_wrong(tmp_path: Path) -> None:
    models = {
        "big": {
            "version": "a" * 40,
            "provider": "vllm",
            "endpoints": ["http://pool-big:8000"],
            "tier": "gpu",
            "context": 8192,
            "served_name": "big",
        }
    }
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump({"models": models, "task_queues": {"chat": "c", "batch": "b", "ingest": "i"}})
    )
    policy = load_policy(SHIPPED, overlay)
    # The overlay's models are the whole registry (the shipped model is gone), its queues every queue.
    assert set(policy.models) == {"big"} and policy.queue("chat") == "c" and policy.queue("ingest") == "i"
    # What the overlay leaves alone is the file's.
    assert policy.activities == load_policy(SHIPPED).activities
    overlay.write_text(yaml.safe_dump({"models": {"big": {**models["big"], "tier": "quantum"}}}))
    with pytest.raises(PolicyError, match=r"temporal\.yaml with .*overlay\.yaml: .*tier"):
        load_policy(SHIPPED, overlay)
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(SHIPPED, tmp_path / "missing.yaml")
