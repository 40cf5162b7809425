"""Create or verify every topic the registry declares (``kairos topics apply``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from kairos.kafka.clients import make_admin
from kairos.settings import KairosSettings
from schemas.registry import TOPICS, TopicSpec


@dataclass(frozen=True)
class TopicResult:
    """What ``apply_topics`` found or did for one topic."""

    name: str
    action: Literal["created", "ok", "drift"]
    detail: str = ""


def partitions_of(spec: TopicSpec, settings: KairosSettings) -> int:
    """The partition count of ``spec`` under ``settings`` (which may override it)."""
    return settings.topic_partitions or spec.partitions


async def apply_topics(settings: KairosSettings, bootstrap: str) -> list[TopicResult]:
    """Create missing topics; report existing ones whose partitions or config differ.

    Existing topics are never altered: a drift is reported for an operator to resolve.
    """
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {settings.topic(spec.name): spec for spec in TOPICS}
        to_create = [
            NewTopic(
                name=name,
                num_partitions=partitions_of(spec, settings),
                replication_factor=settings.replication_factor,
                topic_configs=spec.topic_config(),
            )
            for name, spec in wanted.items()
            if name not in existing
        ]
        results: list[TopicResult] = []
        if to_create:
            # a concurrent apply may win the race; what exists is verified next time
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(to_create)
            await _wait_visible(admin, [t.name for t in to_create])
            results.extend(TopicResult(t.name, "created") for t in to_create)
        present = [name for name in wanted if name in existing]
        if present:
            results.extend(await _verify(admin, settings, {n: wanted[n] for n in present}))
        return results
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], wait: float = 15) -> None:
    """Wait (at most ``wait`` seconds) until every new topic has all its partitions with a
    leader in the metadata."""
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            d["error_code"] == 0
            and d["partitions"]
            and all(p["leader"] >= 0 for p in d["partitions"])
            for d in described
        ):
            return
        await asyncio.sleep(0.1)


async def _verify(
    admin: AIOKafkaAdminClient, settings: KairosSettings, specs: dict[str, TopicSpec]
) -> list[TopicResult]:
    described = await admin.describe_topics(list(specs))
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    configs_resp = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in specs]
    )
    actual: dict[str, dict[str, str]] = {}
    for resp in configs_resp:
        for resource in resp.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            actual[name] = {entry[0]: entry[1] for entry in entries}
    results = []
    for name, spec in specs.items():
        problems = []
        want_parts = partitions_of(spec, settings)
        if partitions.get(name) != want_parts:
            problems.append(f"partitions {partitions.get(name)} != {want_parts}")
        for key, value in spec.topic_config().items():
            if actual.get(name, {}).get(key) != value:
                problems.append(f"{key}={actual.get(name, {}).get(key)} != {value}")
        results.append(
            TopicResult(name, "drift", "; ".join(problems)) if problems else TopicResult(name, "ok")
        )
    return results
