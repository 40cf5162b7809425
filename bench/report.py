"""The table, the JSON file and the lateness chart of one bench run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

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


class Row(NamedTuple):
    """One figure: its printed cells, and the numbers behind them for the JSON."""

    figure: str
    pipeline: str
    ceiling: str
    ratio: str
    aim: str
    value: Any = None
    ceiling_value: Any = None
    ratio_value: float | None = None


def _ratio(value: Any, ceiling: Any) -> float | None:
    try:
        r = float(value) / float(ceiling)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(r) else r


def row(
    figure: str,
    pipeline: str,
    ceiling: str = "",
    aim_text: str = "",
    value: Any = None,
    ceiling_value: Any = None,
) -> Row:
    """A row whose ratio is ``value / ceiling_value`` (both numbers), printed and kept."""
    scalar = value if not isinstance(value, list | tuple | dict) else None
    r = _ratio(scalar, ceiling_value) if ceiling_value is not None else None
    return Row(
        figure,
        pipeline,
        ceiling,
        ratio(scalar, ceiling_value) if ceiling_value is not None else "",
        aim_text,
        value,
        ceiling_value,
        r,
    )


def build_rows(r: dict[str, Any]) -> list[Row]:
    """Every reported figure with its ceiling and their ratio."""
    perf = r.get("kafka_perf") or {}
    prod, cons = perf.get("producer", {}), perf.get("consumer", {})
    relay, rsteady = r.get("raw_relay") or {}, r.get("raw_relay_steady") or {}
    smtp = r.get("smtp_ceiling") or {}
    out: list[Row] = []
    if perf:
        out += [
            row(
                f"ceiling: ProducerPerformance, {perf['records']:,} x {perf['record_bytes']} B",
                "",
                f"{num(prod.get('records_per_s'))}/s",
                value=None,
                ceiling_value=None,
            )._replace(ceiling_value=prod.get("records_per_s")),
            row(
                "ceiling: ConsumerPerformance (fetch)",
                "",
                f"{num(cons.get('fetch_records_per_s'))}/s",
            )._replace(ceiling_value=cons.get("fetch_records_per_s")),
        ]
    if smtp:
        out.append(
            row(
                f"ceiling: smtp-source -> smtp-sink, {smtp['messages']:,} x "
                f"{smtp['message_bytes']:,} B, {smtp['connections']} connections",
                "",
                f"{num(smtp['seconds'], ' s')} ({num(smtp['per_s'])}/s)",
            )._replace(ceiling_value=smtp["per_s"])
        )
    for key, label in (("raw_relay", "1 KiB"), ("raw_hop", "1 KiB"), ("raw_relay_large", "64 KiB")):
        rel = r.get(key)
        if rel:
            out.append(
                row(
                    f"ceiling: raw {rel.get('hops', r['hops'])}-hop relay, {rel['n']:,} x {label}"
                    + (f" ({rel['arrived']:,} arrived)" if rel["arrived"] < rel["n"] else ""),
                    "",
                    f"{num(rel['seconds'], ' s')} ({num(rel['per_s'])}/s)",
                )._replace(ceiling_value=rel["per_s"])
            )
    for key in ("burst", "large"):
        b = r.get(key)
        if b:
            ceil = relay if key == "burst" else (r.get("raw_relay_large") or {})
            mail = smtp if key == "burst" else (r.get("smtp_ceiling_large") or {})
            out += burst_rows(key, b, ceil, mail)
    if r.get("spread"):
        out += spread_rows(r["spread"], r.get("burst"))
    st = r.get("stages")
    if st:
        hop = r.get("raw_hop") or {}
        for service, s in st.get("stages", {}).items():
            ceil = smtp if service == "sender" else hop
            name = "smtp-source" if service == "sender" else "one relay hop"
            out.append(
                row(
                    f"stage alone: {service} drains {s['n']:,} per second ({name})",
                    f"{num(s['per_s'])} ({num(s['seconds'], ' s', 0)})",
                    num(ceil.get("per_s")),
                    value=s["per_s"],
                    ceiling_value=ceil.get("per_s"),
                )
            )
    s = r.get("steady")
    if s:
        cap = s["drain_seconds"]
        dl, ol = s["due_lateness"], s["delivery_lateness"]
        rl = rsteady.get("latency", {})
        out += [
            row(
                f"steady {s['rate_asked']:,}/s for {s['seconds']:.0f} s: delivered per second",
                num(s["delivered_per_s"]),
                num(rsteady.get("per_s")),
                f"asked {s['rate_asked']:,}/s",
                s["delivered_per_s"],
                rsteady.get("per_s"),
            ),
            row(
                "steady: due lateness p50 / p99",
                f"{num(dl['p50'], '', cap)} / {num(dl['p99'], ' s', cap)}",
                f"{num(rl.get('p50'), '', cap)} / {num(rl.get('p99'), ' s', cap)}",
                aim(le(dl["p99"], AIMS["steady_p99"]), "p99 <= 0.25 s"),
                dl["p99"],
                rl.get("p99"),
            ),
            row(
                "steady: delivery lateness p50 / p99",
                f"{num(ol['p50'], '', cap)} / {num(ol['p99'], ' s', cap)}",
                f"{num(rl.get('p50'), '', cap)} / {num(rl.get('p99'), ' s', cap)}",
                "",
                ol["p99"],
                rl.get("p99"),
            ),
            row(
                "steady: delivered / written / early",
                f"{s['delivered']:,} / {s['written']:,} / {s['early']:,}",
                "",
                aim(s["early"] == 0, "early = 0"),
                [s["delivered"], s["written"], s["early"]],
            ),
        ]
    sub = r.get("submission")
    if sub:
        h, m = sub["http"], sub["smtp"]
        raw = sub.get("raw") or {}
        raw_lat = raw.get("latency", {})
        per_s = raw.get("per_s")
        p50 = raw_lat["p50"] * 1000 if raw_lat else None
        p99 = raw_lat["p99"] * 1000 if raw_lat else None
        out += [
            row(
                f"submission: POST /email per second ({h['clients']} clients)",
                num(h["per_s"]),
                num(per_s),
                "",
                h["per_s"],
                per_s,
            ),
            row(
                "submission: POST /email latency p50 / p99",
                f"{num(h['latency']['p50'] * 1000)} / {num(h['latency']['p99'] * 1000, ' ms')}",
                f"{num(p50)} / {num(p99, ' ms')}",
                "",
                h["latency"]["p99"] * 1000,
                p99,
            ),
            row(
                f"submission: SMTP messages per second ({m['clients']} connections)"
                if m
                else "submission: SMTP messages per second",
                num(m["per_s"]) if m else "n/a (not implemented)",
                num(per_s),
                "",
                m["per_s"] if m else None,
                per_s if m else None,
            ),
        ]
    t = r.get("timer_scale")
    if t:
        pend, target = t["pending"], 1_000_000
        label = f"{pend:,} pending over 30 days"
        out += [
            row(
                "timer: schedules taken in per second",
                num(t["intake_per_s"]),
                num(relay.get("per_s")),
                "",
                t["intake_per_s"],
                relay.get("per_s"),
            ),
            row(
                f"timer: RSS bytes per pending ({label})",
                num(t["rss_bytes_per_pending"]),
                "",
                aim(le(t["rss_bytes_per_pending"], AIMS["rss_per_pending"]), "<= 300"),
                t["rss_bytes_per_pending"],
            ),
            row(
                f"timer: RSS at {target:,} pending"
                + (" (extrapolated)" if t["extrapolated"] else ""),
                num(t[f"rss_bytes_at_{target}"] / 1e6, " MB"),
                value=t[f"rss_bytes_at_{target}"],
            ),
            row(
                "timer: RocksDB / changelog bytes per pending",
                f"{num(t['disk_bytes_per_pending'])} / {num(t['changelog_bytes_per_pending'])}",
                value=[t["disk_bytes_per_pending"], t["changelog_bytes_per_pending"]],
            ),
            row(
                f"timer: kill -9 with {pend:,} pending: healthy / due event after restart",
                f"{num(t['recovery_healthy_seconds'])} / {num(t['recovery_due_seconds'], ' s')}",
                "",
                aim(le(t["recovery_due_seconds"], AIMS["recovery"]), "<= 10 s"),
                [t["recovery_healthy_seconds"], t["recovery_due_seconds"]],
            ),
        ]
    return out


def counts_row(name: str, b: dict[str, Any]) -> Row:
    """Delivered, failed and early messages of a burst (unique ids); early must be 0."""
    failed = sum(b["failed"].values())
    return row(
        f"{name}: delivered / failed / early (unique ids)",
        f"{b['delivered']:,} / {failed:,} / {b['early']:,}",
        "",
        aim(b["early"] == 0, "early = 0"),
        [b["delivered"], failed, b["early"]],
    )


def quantiles(d: dict[str, Any], cap: float | None = None) -> str:
    """``p50 / p99 / max s`` of a lateness spread."""
    return f"{num(d['p50'], '', cap)} / {num(d['p99'], '', cap)} / {num(d['max'], ' s', cap)}"


def spread_rows(b: dict[str, Any], burst: dict[str, Any] | None) -> list[Row]:
    """The spread burst (``deliverWithin``) beside the burst all due in one second: delivery
    lateness from each message's own due second, the burst's in the ceiling column."""
    cap = b["cap_seconds"] + b["spread_seconds"]
    own = b["delivery_lateness_own"]
    peak = (burst or {}).get("delivery_lateness") or {}
    name = f"spread {b['n']:,} over {b['spread_seconds']} s"
    burst_text = quantiles(peak) if peak else ""
    return [
        row(
            f"{name}: delivery lateness p50 / p99 / max (own second; burst's)",
            quantiles(own, cap),
            burst_text,
            "",
            [own["p50"], own["p99"], own["max"]],
            peak.get("p99"),
        )._replace(
            ratio=ratio(own["p99"], peak.get("p99")),
            ratio_value=_ratio(own["p99"], peak.get("p99")),
        ),
        counts_row(name, b),
    ]


def burst_rows(
    key: str, b: dict[str, Any], relay: dict[str, Any], smtp: dict[str, Any]
) -> list[Row]:
    """The rows of a burst (``burst``, 1 KiB, or ``large``, 64 KiB)."""
    cap = b["cap_seconds"]
    name = key if key == "burst" else "large (64 KiB)"
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
    relay_s = relay.get("seconds")
    out = [
        row(
            f"{name} {b['n']:,}: timer held them all",
            holding,
            "",
            f"intake {num(b['timer_intake_per_s'])}/s",
            held,
        ),
        row(
            f"{name}: last due event after the due second",
            num(last_due, " s", cap),
            "",
            aim(le(last_due, AIMS["last_due"]), "<= 2 s") if key == "burst" else "",
            last_due,
        ),
        row(
            f"{name}: last outcome after the due second",
            num(last_out, " s", cap),
            num(relay_s, " s"),
            aim(
                le(last_out / relay_s, AIMS["last_outcome_ratio"]) if relay_s else None,
                "<= 2x relay",
            )
            if key == "burst"
            else "",
            last_out,
            relay_s,
        ),
        row(
            f"{name}: due events / outcomes per second (relay)",
            f"{num(b['due_events_per_s'])} / {num(b['outcomes_per_s'])}",
            num(relay.get("per_s")),
            "",
            b["outcomes_per_s"],
            relay.get("per_s"),
        ),
        row(
            f"{name}: outcomes per second (smtp-source)",
            num(b["outcomes_per_s"]),
            num(smtp.get("per_s")),
            "",
            b["outcomes_per_s"],
            smtp.get("per_s"),
        ),
        row(
            f"{name}: due lateness p50 / p99 / max",
            f"{num(dl['p50'], '', cap)} / {num(dl['p99'], '', cap)} / {num(dl['max'], ' s', cap)}",
            value=[dl["p50"], dl["p99"], dl["max"]],
        ),
        row(
            f"{name}: delivery lateness p50 / p99 / max",
            f"{num(ol['p50'], '', cap)} / {num(ol['p99'], '', cap)} / {num(ol['max'], ' s', cap)}",
            value=[ol["p50"], ol["p99"], ol["max"]],
        ),
        counts_row(name, b),
        row(
            f"{name}: duplicates: due events / outcomes",
            f"{b.get('due_duplicates', 0):,} / {b.get('outcome_duplicates', 0):,}",
            value=[b.get("due_duplicates", 0), b.get("outcome_duplicates", 0)],
        ),
        row(
            f"{name}: relayed by the sink ({b.get('sink', 'python')}) / delivered outcomes",
            f"{b['relayed_by_sink']:,} / {b.get('delivered_events', b['delivered']):,}",
            value=[b["relayed_by_sink"], b.get("delivered_events", b["delivered"])],
        ),
    ]
    tb = b.get("topic_bytes")
    if tb and b["delivered"]:
        per = {t.rsplit(".", 1)[-1]: v / b["delivered"] for t, v in sorted(tb.items()) if v}
        out.append(
            row(
                f"{name}: bytes written to Kafka per delivered message",
                num(sum(per.values())),
                num(float(b.get("record_bytes", 0)) or None),
                "",
                sum(per.values()),
                b.get("record_bytes"),
            )
        )
        out += [row(f"{name}:   of which {topic}", num(v), value=v) for topic, v in per.items()]
    return out


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, pipeline, ceiling, pipeline / ceiling, aim) for every reported figure."""
    return [(x.figure, x.pipeline, x.ceiling, x.ratio, x.aim) for x in build_rows(r)]


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of the table as numbers (the JSON's ``figures``)."""
    return [
        {
            "figure": x.figure.strip(),
            "value": x.value,
            "ceiling": x.ceiling_value,
            "ratio": x.ratio_value,
            "aim": x.aim,
        }
        for x in build_rows(r)
    ]


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
    r = {**r, "figures": figures(r)}

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
            f"raw {r['hops']}-hop relay (its clock started as at the due second)",
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


def soak_table(soak: dict[str, Any]) -> str:
    """Memory and disk of each service at the soak's checkpoint and end, the growth per
    message between them and over the second half (about 0 when its state is bounded), and
    each reading's RSS (where a bounded cache stops growing)."""
    mid, end, growth = soak["at_checkpoint"], soak["at_end"], soak["growth_bytes_per_message"]
    late = soak.get("growth_second_half", {})
    lines = [
        f"soak: {soak['messages']:,} messages at {soak['rate_asked']:,}/s "
        f"({soak['seconds']:.0f} s, {'complete' if soak['complete'] else 'INCOMPLETE'}); "
        f"first reading after {soak['checkpoint']:,}"
        + (f"; second half from {soak['half']:,}" if late else ""),
        f"{'service':10} {'RSS then':>10} {'RSS end':>10} {'B/msg':>7} "
        f"{'disk then':>11} {'disk end':>11} {'B/msg':>7}"
        + (f" {'RSS B/msg 2nd half':>19} {'disk':>6}" if late else ""),
    ]
    for service in sorted(end):
        if service not in mid:
            continue
        row = (
            f"{service:10} {mid[service]['rss'] / 2**20:9.1f}M {end[service]['rss'] / 2**20:9.1f}M "
            f"{growth[service]['rss']:7.1f} {mid[service]['disk'] / 2**20:10.1f}M "
            f"{end[service]['disk'] / 2**20:10.1f}M {growth[service]['disk']:7.1f}"
        )
        if service in late:
            row += f" {late[service]['rss']:19.1f} {late[service]['disk']:6.1f}"
        lines.append(row)
    readings = soak.get("readings", [])
    if len(readings) > 2:
        lines.append("RSS (MB) at each reading:")
        lines.append(f"{'messages':>10} " + " ".join(f"{s:>9}" for s in sorted(end)))
        for r in readings:
            h = r["holdings"]
            lines.append(
                f"{r['messages']:>10,} "
                + " ".join(
                    f"{h[s]['rss'] / 2**20:9.1f}" if s in h else f"{'':>9}" for s in sorted(end)
                )
            )
    return "\n".join(lines)
