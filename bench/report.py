"""The table, the JSON file and the lateness chart of one bench run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: what the issue asks the pipeline to reach (reported, never asserted)
AIMS = {
    "last_due": 2.0,  # s after the due second
    "last_outcome_ratio": 2.0,  # x the raw relay's time
    "steady_p99": 0.25,  # s
    "rss_per_pending": 300.0,  # bytes
    "recovery": 10.0,  # s
}


def num(value: Any, unit: str = "", cap: float | None = None) -> str:
    """A figure for the table: n/a for missing, ``>cap`` for what never came."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return f">{cap:.0f}{unit}" if cap is not None else "never"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    if abs(value) >= 10:
        return f"{value:.1f}{unit}"
    return f"{value:.2f}{unit}"


def ratio(value: Any, ceiling: Any) -> str:
    try:
        r = float(value) / float(ceiling)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    if math.isnan(r):
        return ""
    return "inf" if math.isinf(r) else f"{r:.2f}x"


def aim(met: bool | None, text: str) -> str:
    if met is None:
        return text
    return f"{text} {'met' if met else 'MISSED'}"


def le(value: Any, limit: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value <= limit)


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, pipeline, ceiling, pipeline / ceiling, aim) for every reported figure."""
    perf = r.get("kafka_perf") or {}
    prod, cons = perf.get("producer", {}), perf.get("consumer", {})
    relay, rsteady = r.get("raw_relay") or {}, r.get("raw_relay_steady") or {}
    out: list[tuple[str, str, str, str, str]] = []
    hops = r["hops"]
    if perf:
        out += [
            (
                f"ceiling: ProducerPerformance, {perf['records']:,} x {perf['record_bytes']} B",
                "",
                f"{num(prod.get('records_per_s'))}/s",
                "",
                "",
            ),
            (
                "ceiling: ConsumerPerformance (fetch)",
                "",
                f"{num(cons.get('fetch_records_per_s'))}/s",
                "",
                "",
            ),
        ]
    if relay:
        out.append(
            (
                f"ceiling: raw {hops}-hop relay, {relay['n']:,} messages",
                "",
                f"{num(relay['seconds'], ' s')} ({num(relay['per_s'])}/s)",
                "",
                "",
            )
        )
    b = r.get("burst")
    if b:
        cap = b["cap_seconds"]
        last_due = b["last_due_event"] if b["last_due_event"] is not None else math.inf
        last_out = b["last_outcome"] if b["last_outcome"] is not None else math.inf
        dl, ol = b["due_lateness"], b["delivery_lateness"]
        held = b["timer_had_all_before_due"]
        if held is None:
            holding = f"not by +{cap:.0f} s"
        elif held >= 0:
            holding = f"{held:.1f} s before"
        else:
            holding = f"{-held:.1f} s after; {b['timer_backlog_at_due']:,} unread at due"
        out += [
            (
                f"burst {b['n']:,}: timer held them all",
                holding,
                "",
                "",
                f"intake {num(b['timer_intake_per_s'])}/s",
            ),
            (
                "burst: last due event after the due second",
                num(last_due, " s", cap),
                "",
                "",
                aim(le(last_due, AIMS["last_due"]), "<= 2 s"),
            ),
            (
                "burst: last outcome after the due second",
                num(last_out, " s", cap),
                num(relay.get("seconds"), " s"),
                ratio(last_out, relay.get("seconds")),
                aim(
                    le(last_out / relay["seconds"], AIMS["last_outcome_ratio"]) if relay else None,
                    "<= 2x relay",
                ),
            ),
            (
                "burst: due events / outcomes per second",
                f"{num(b['due_events_per_s'])} / {num(b['outcomes_per_s'])}",
                num(relay.get("per_s")),
                ratio(b["outcomes_per_s"], relay.get("per_s")),
                "",
            ),
            (
                "burst: due lateness p50 / p99 / max",
                f"{num(dl['p50'], '', cap)} / {num(dl['p99'], '', cap)} / "
                f"{num(dl['max'], ' s', cap)}",
                "",
                "",
                "",
            ),
            (
                "burst: delivery lateness p50 / p99 / max",
                f"{num(ol['p50'], '', cap)} / {num(ol['p99'], '', cap)} / "
                f"{num(ol['max'], ' s', cap)}",
                "",
                "",
                "",
            ),
            (
                "burst: delivered / failed / early",
                f"{b['delivered']:,} / {sum(b['failed'].values()):,} / {b['early']:,}",
                "",
                "",
                aim(b["early"] == 0, "early = 0"),
            ),
        ]
    s = r.get("steady")
    if s:
        cap = s["drain_seconds"]
        dl, ol = s["due_lateness"], s["delivery_lateness"]
        rl = rsteady.get("latency", {})
        out += [
            (
                f"steady {s['rate_asked']:,}/s for {s['seconds']:.0f} s: delivered per second",
                num(s["delivered_per_s"]),
                num(rsteady.get("per_s")),
                ratio(s["delivered_per_s"], rsteady.get("per_s")),
                f"asked {s['rate_asked']:,}/s",
            ),
            (
                "steady: due lateness p50 / p99",
                f"{num(dl['p50'], '', cap)} / {num(dl['p99'], ' s', cap)}",
                f"{num(rl.get('p50'), '', cap)} / {num(rl.get('p99'), ' s', cap)}",
                ratio(dl["p99"], rl.get("p99")),
                aim(le(dl["p99"], AIMS["steady_p99"]), "p99 <= 0.25 s"),
            ),
            (
                "steady: delivery lateness p50 / p99",
                f"{num(ol['p50'], '', cap)} / {num(ol['p99'], ' s', cap)}",
                f"{num(rl.get('p50'), '', cap)} / {num(rl.get('p99'), ' s', cap)}",
                ratio(ol["p99"], rl.get("p99")),
                "",
            ),
            (
                "steady: delivered / written / early",
                f"{s['delivered']:,} / {s['written']:,} / {s['early']:,}",
                "",
                "",
                aim(s["early"] == 0, "early = 0"),
            ),
        ]
    sub = r.get("submission")
    if sub:
        h, m = sub["http"], sub["smtp"]
        raw = sub.get("raw") or {}
        raw_lat = raw.get("latency", {})
        # the ceiling of a durable submission: concurrent acks=all round trips on this broker
        prod = {
            "records_per_s": raw.get("per_s"),
            "latency_p50_ms": raw_lat["p50"] * 1000 if raw_lat else None,
            "latency_p99_ms": raw_lat["p99"] * 1000 if raw_lat else None,
        }
        out += [
            (
                f"submission: POST /email per second ({h['clients']} clients)",
                num(h["per_s"]),
                num(prod.get("records_per_s")),
                ratio(h["per_s"], prod.get("records_per_s")),
                "",
            ),
            (
                "submission: POST /email latency p50 / p99",
                f"{num(h['latency']['p50'] * 1000)} / {num(h['latency']['p99'] * 1000, ' ms')}",
                f"{num(prod.get('latency_p50_ms'))} / {num(prod.get('latency_p99_ms'), ' ms')}",
                ratio(h["latency"]["p99"] * 1000, prod.get("latency_p99_ms")),
                "",
            ),
            (
                f"submission: SMTP messages per second ({m['clients']} connections)"
                if m
                else "submission: SMTP messages per second",
                num(m["per_s"]) if m else "n/a (not implemented)",
                num(prod.get("records_per_s")),
                ratio(m["per_s"], prod.get("records_per_s")) if m else "",
                "",
            ),
        ]
    t = r.get("timer_scale")
    if t:
        pend, target = t["pending"], 1_000_000
        label = f"{pend:,} pending over 30 days"
        out += [
            (
                "timer: schedules taken in per second",
                num(t["intake_per_s"]),
                num(relay.get("per_s")),
                ratio(t["intake_per_s"], relay.get("per_s")),
                "",
            ),
            (
                f"timer: RSS bytes per pending ({label})",
                num(t["rss_bytes_per_pending"]),
                "",
                "",
                aim(le(t["rss_bytes_per_pending"], AIMS["rss_per_pending"]), "<= 300"),
            ),
            (
                f"timer: RSS at {target:,} pending"
                + (" (extrapolated)" if t["extrapolated"] else ""),
                num(t[f"rss_bytes_at_{target}"] / 1e6, " MB"),
                "",
                "",
                "",
            ),
            (
                "timer: RocksDB / changelog bytes per pending",
                f"{num(t['disk_bytes_per_pending'])} / {num(t['changelog_bytes_per_pending'])}",
                "",
                "",
                "",
            ),
            (
                f"timer: kill -9 with {pend:,} pending: healthy / due event after restart",
                f"{num(t['recovery_healthy_seconds'])} / {num(t['recovery_due_seconds'], ' s')}",
                "",
                "",
                aim(le(t["recovery_due_seconds"], AIMS["recovery"]), "<= 10 s"),
            ),
        ]
    return out


def table(r: dict[str, Any]) -> str:
    header = ("figure", "pipeline", "ceiling", "ratio", "aim")
    lines = [header, *rows(r)]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    text = []
    for i, line in enumerate(lines):
        text.append(
            "  ".join(
                cell.ljust(widths[j]) if j in (0, 4) else cell.rjust(widths[j])
                for j, cell in enumerate(line)
            ).rstrip()
        )
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def write_json(r: dict[str, Any], path: Path) -> None:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else "inf"
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(r), indent=1, default=str))


def chart(r: dict[str, Any], path: Path) -> bool:
    """The burst over time: share of due events and outcomes (and of the raw relay's
    arrivals) by seconds after the due second, and each due event's lateness."""
    b = r.get("burst")
    if not b:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, n = b["series"], b["n"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)

    def cumulative(xs: list[float], seen: int) -> list[float]:
        # xs: evenly spaced samples of the sorted arrival times of ``seen`` events
        return [(i + 1) / len(xs) * seen * 100 / n for i in range(len(xs))]

    relay = r.get("raw_relay") or {"n": 1, "arrived": 0}
    for xs, seen, label in (
        (series["due_arrivals"], b["due_events"], "due events (timer)"),
        (
            series["outcome_arrivals"],
            b["delivered"] + sum(b["failed"].values()),
            "outcomes (sender)",
        ),
        (
            relay.get("arrivals", []),
            relay["arrived"] * n // max(1, relay["n"]),
            f"raw {r['hops']}-hop relay (from its first write)",
        ),
    ):
        if xs:
            top.plot(xs, cumulative(xs, seen), label=label)
    top.axvline(0, color="grey", linewidth=0.8)
    top.set_ylabel(f"% of the {n:,} messages")
    top.set_title(f"Burst: {n:,} messages due in the same second")
    top.legend(loc="lower right")
    points = series["due_lateness"]
    bottom.scatter([p[0] for p in points], [p[1] for p in points], s=2)
    bottom.set_xlabel("seconds after the due second (when the bench received the event)")
    bottom.set_ylabel("due event lateness (emitted_at - due), s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
