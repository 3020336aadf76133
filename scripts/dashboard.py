#!/usr/bin/env python3
"""Writes dashboards/slmgate.json, the Grafana dashboard (JSON model).

The panels are listed here once, as data; the JSON is generated so that ids,
grid positions, datasource references and legends stay consistent. Edit this
file, then run `python3 scripts/dashboard.py` (scripts/check-deploy fails when
the committed JSON is not what this prints). Every expression uses only
metrics registered in src/metrics.rs (checked by scripts/check-deploy) and the
Grafana variables $job, $local_backend and $__rate_interval.

Usage: scripts/dashboard.py [--check]
"""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "dashboards" / "slmgate.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
J = 'job=~"$job"'  # every selector carries the job filter
RI = "$__rate_interval"


def sel(extra=""):
    return "{" + J + ("," + extra if extra else "") + "}"


def rate(metric, extra="", by=None, window=RI):
    inner = f"rate({metric}{sel(extra)}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantiles(metric, by, extra=""):
    """p50/p95/p99 targets of a histogram, one series per `by` label."""
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({metric}_bucket{sel(extra)}[{RI}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


# Answered by a local backend, over answered by any backend.
LOCAL_SHARE = (rate("slmgate_requests_total", 'backend=~"$local_backend"') + " / "
               + rate("slmgate_requests_total", 'backend!="none"'))

# Dashboard layout: rows of panels. A panel is a dict:
#   title, kind (timeseries|stat|heatmap|bargauge), unit, w (grid columns of 24),
#   targets [(expr, legend)], description, optional extras.
ROWS = [
    ("Traffic", [
        dict(title="Request rate by route, backend and model", unit="reqps", w=12,
             targets=[(rate("slmgate_requests_total", by="route, backend, model"),
                       "{{route}} → {{backend}}/{{model}}")],
             description="Chat requests per second, by the route taken (auto:<tier> or "
                         "direct), the backend and model that answered (none: failed before "
                         "a backend answered)."),
        dict(title="Share served locally", unit="percentunit", w=6, kind="stat",
             targets=[(LOCAL_SHARE, "local share")],
             description="Requests answered by the local backend(s) ($local_backend, a regex "
                         "of backend names) over all requests a backend answered.",
             extra={"min": 0, "max": 1}),
        dict(title="Share served locally over time", unit="percentunit", w=6,
             targets=[(LOCAL_SHARE, "local share")],
             extra={"min": 0, "max": 1}),
        dict(title="Requests by HTTP status", unit="reqps", w=12,
             targets=[(rate("slmgate_requests_total", by="status"), "{{status}}")],
             description="499: the client left mid-stream."),
        dict(title="Gateway overhead", unit="s", w=12,
             targets=[(f"histogram_quantile({q}, sum by (le) (rate(slmgate_overhead_seconds_bucket{sel()}[{RI}])))",
                       f"p{int(q * 100)}") for q in (0.5, 0.99)],
             description="Time spent in the gateway itself: total minus the wait for the upstream."),
    ]),
    ("Latency", [
        dict(title="Request latency by backend", unit="s", w=12,
             targets=quantiles("slmgate_request_duration_seconds", "backend"),
             description="Whole request, until the last byte, of answered requests."),
        dict(title="Time to first token by backend", unit="s", w=12,
             targets=quantiles("slmgate_ttft_seconds", "backend"),
             description="Until the first body byte (streams: the first chunk)."),
    ]),
    ("Tokens, cost and savings", [
        dict(title="Tokens per second", unit="suffix: tok/s", w=8,
             targets=[(rate("slmgate_tokens_total", by="backend, direction"),
                       "{{backend}} {{direction}}")]),
        dict(title="Cost per hour by backend", unit="currencyUSD", w=8,
             targets=[(f"3600 * {rate('slmgate_cost_usd_total', by='backend')}", "{{backend}}")],
             description="Dollars per hour at the policy's prices (the current rate, extrapolated)."),
        dict(title="Savings per hour vs always-cloud", unit="currencyUSD", w=8,
             targets=[(f"3600 * {rate('slmgate_savings_usd_total', by='backend')}", "{{backend}}")],
             description="Cost avoided per hour versus sending every request to the policy's "
                         "reference cloud model."),
        dict(title="Cumulative savings vs always-cloud", unit="currencyUSD", w=8,
             targets=[(f"sum(slmgate_savings_usd_total{sel()})", "saved"),
                      (f"sum(slmgate_cost_usd_total{sel()})", "paid")],
             description="Since the gateway processes started (counters reset on restart)."),
        dict(title="Saved share of the always-cloud bill", unit="percentunit", w=8, kind="stat",
             targets=[(f"sum(slmgate_savings_usd_total{sel()}) / (sum(slmgate_savings_usd_total{sel()})"
                       f" + sum(slmgate_cost_usd_total{sel()}))", "saved share")],
             extra={"min": 0, "max": 1}),
        dict(title="Total saved", unit="currencyUSD", w=8, kind="stat",
             targets=[(f"sum(slmgate_savings_usd_total{sel()})", "saved")]),
    ]),
    ("Triage", [
        dict(title="Triage score distribution", unit="short", w=12, kind="heatmap",
             targets=[(f"sum by (le) (increase(slmgate_triage_score_bucket{sel()}[{RI}]))", "{{le}}")],
             description="Requests per score bucket (0: simple, 1: hard)."),
        dict(title="Triage latency", unit="s", w=12,
             targets=[(f"histogram_quantile({q}, sum by (le) (rate(slmgate_triage_duration_seconds_bucket{sel()}[{RI}])))",
                       f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    ]),
    ("Caches", [
        dict(title="Cache hit ratio", unit="percentunit", w=8,
             targets=[(rate("slmgate_cache_requests_total", 'result="hit"', by="cache") + " / "
                       + rate("slmgate_cache_requests_total", by="cache"), "{{cache}}")],
             extra={"min": 0, "max": 1},
             description="Hits over lookups, per cache (exact, exact_redis, semantic; triage: "
                         "the triage result cache). Bypasses count as lookups."),
        dict(title="Cache lookups", unit="ops", w=8,
             targets=[(rate("slmgate_cache_requests_total", by="cache, result"), "{{cache}} {{result}}")]),
        dict(title="Saved by cache hits", unit="currencyUSD", w=8,
             targets=[(f"sum by (cache) (rate(slmgate_cache_saved_usd_total{sel()}[{RI}])) * 3600", "{{cache}} $/h")],
             description="What the hits would have cost on the target that first answered."),
        dict(title="Cache size", unit="bytes", w=12,
             targets=[(f"sum by (instance, cache) (slmgate_cache_bytes{sel()})", "{{instance}} {{cache}}")]),
        dict(title="Cache evictions", unit="ops", w=12,
             targets=[(rate("slmgate_cache_evictions_total", by="cache"), "{{cache}}")],
             description="Entries dropped to stay within max_bytes."),
    ]),
    ("Privacy", [
        dict(title="Personal or secret data found", unit="ops", w=12,
             targets=[(rate("slmgate_pii_detected_total", by="kind"), "{{kind}}")],
             description="Findings per kind in requests (only when a pii rule exists); never the data."),
        dict(title="pii rules applied", unit="reqps", w=12,
             targets=[(rate("slmgate_pii_actions_total", by="action"), "{{action}}")],
             description="Requests kept local, redacted or rejected by a pii rule."),
    ]),
    ("Errors and fallbacks", [
        dict(title="Error ratio (5xx)", unit="percentunit", w=8,
             targets=[(rate("slmgate_requests_total", 'status=~"5.."') + " / " + rate("slmgate_requests_total"), "5xx share")],
             extra={"min": 0}),
        dict(title="Upstream errors by backend and kind", unit="ops", w=8,
             targets=[(rate("slmgate_upstream_errors_total", by="backend, kind"), "{{backend}} {{kind}}")],
             description="Failures of one target (connect, timeout, transport, upstream_status, "
                         "rate_limited, auth, client_error, bad_response, unavailable, unsupported, "
                         "queue_full, overloaded, circuit_open, mid_stream)."),
        dict(title="Cloud requests in flight by backend", unit="short", w=8,
             targets=[(f"sum by (backend) (slmgate_backend_in_flight{sel()})", "{{backend}}")],
             description="Streams count until they end. At a backend's max_concurrency the next "
                         "request is shed (upstream errors, kind overloaded): to the fallback, else 503."),
        dict(title="Circuit state by backend", unit="short", w=8,
             targets=[(f"max by (backend) (slmgate_circuit_state{sel()})", "{{backend}}")],
             description="0 closed, 1 open (calls go straight to the fallback), 2 half-open (a probe)."),
        dict(title="Fallbacks by reason", unit="ops", w=8,
             targets=[(rate("slmgate_fallbacks_total", by="from, to, reason"), "{{from}} → {{to}} ({{reason}})")]),
    ]),
    ("Local model", [
        dict(title="Local queue depth", unit="short", w=12,
             targets=[(f"sum by (instance) (slmgate_local_queue_depth{sel()})", "{{instance}}")],
             description="Requests admitted to the local model (running + waiting); at the "
                         "backend's max_queue new ones are rejected (429) or fall back."),
        dict(title="Local backend rejections (queue full)", unit="ops", w=12,
             targets=[(rate("slmgate_upstream_errors_total", 'kind="queue_full"', by="backend"), "{{backend}}")]),
        dict(title="Self-hosted replicas in rotation", unit="short", w=12,
             targets=[(f"min by (backend) (slmgate_backend_replicas_healthy{sel()})", "{{backend}}")],
             description="Replicas of self_hosted backends taking requests (the rest are ejected "
                         "after failures in a row, until a probe lets them back)."),
    ]),
    ("Shadow sampling", [
        dict(title="Shadow agreement", unit="percentunit", w=8,
             targets=[(f"avg by (instance) (slmgate_shadow_agreement_ratio{sel()})", "{{instance}}")],
             extra={"min": 0, "max": 1},
             description="Share of shadow-sampled local answers that agree with the reference "
                         "model (0 until the first sample; needs shadow: in the policy)."),
        dict(title="Shadow samples by result", unit="ops", w=8,
             targets=[(rate("slmgate_shadow_requests_total", by="result"), "{{result}}")]),
        dict(title="Shadow similarity and cost", unit="none", w=8,
             targets=[(f"histogram_quantile(0.5, sum by (le) (rate(slmgate_shadow_similarity_bucket{sel()}[{RI}])))",
                       "p50 similarity"),
                      (f"3600 * sum(rate(slmgate_shadow_cost_usd_total{sel()}[{RI}]))", "cost USD/h")],
             overrides=[("cost USD/h", "currencyUSD")]),
    ]),
    ("Keys and budgets", [
        dict(title="Requests per key", unit="reqps", w=8,
             targets=[(rate("slmgate_key_requests_total", by="key, status"), "{{key}} {{status}}")],
             description="key=none: requests without a valid key (401)."),
        dict(title="Spend per key (per hour)", unit="currencyUSD", w=8,
             targets=[(f"3600 * {rate('slmgate_key_spend_usd_total', by='key')}", "{{key}}")]),
        dict(title="Tokens per key", unit="suffix: tok/s", w=8,
             targets=[(rate("slmgate_key_tokens_total", by="key, direction"), "{{key}} {{direction}}")]),
        dict(title="Budget remaining", unit="currencyUSD", w=8,
             targets=[(f"min by (key, period) (slmgate_key_budget_remaining_usd{sel()})", "{{key}} {{period}}")],
             description="Budget left after each key's last reservation (day: UTC day)."),
        dict(title="Budget used", unit="percentunit", w=8,
             targets=[(f"1 - min by (key, period) (slmgate_key_budget_remaining_usd{sel()})"
                       f" / max by (key, period) (slmgate_key_budget_usd{sel()})", "{{key}} {{period}}")],
             extra={"min": 0, "max": 1},
             description="Share of each key's day and month budget spent or reserved."),
        dict(title="Requests limited", unit="reqps", w=8,
             targets=[(rate("slmgate_key_limited_total", by="key, limit, outcome"),
                       "{{key}} {{limit}} → {{outcome}}")],
             description="Refused (rejected) or sent to the local model (local) by a key's "
                         "rpm, tpm, budget or model allow-list."),
        dict(title="Shared-state (Redis) errors", unit="ops", w=8,
             targets=[(rate("slmgate_state_errors_total", by="op"), "{{op}}")],
             description="Failed Redis operations; with on_unavailable: open requests are "
                         "still admitted."),
    ]),
    ("Policy", [
        dict(title="Policy reloads", unit="short", w=24,
             targets=[(f"sum by (result) (increase(slmgate_policy_reloads_total{sel()}[{RI}]))", "{{result}}")],
             description="Reloads on SIGHUP or file change; error: the new file was refused and "
                         "the old policy keeps serving."),
    ]),
]


def panel(pid, spec, x, y, h):
    kind = spec.get("kind", "timeseries")
    defaults = {"unit": spec["unit"]}
    defaults.update(spec.get("extra", {}))
    overrides = [
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "unit", "value": unit}]}
        for name, unit in spec.get("overrides", [])
    ]
    p = {
        "id": pid,
        "type": kind,
        "title": spec["title"],
        "description": spec.get("description", ""),
        "datasource": DS,
        "gridPos": {"h": h, "w": spec["w"], "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "targets": [],
    }
    for i, (expr, legend) in enumerate(spec["targets"]):
        t = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
             "legendFormat": legend, "range": True, "instant": False}
        if kind == "heatmap":
            t["format"] = "heatmap"
        p["targets"].append(t)
    if kind == "timeseries":
        defaults.setdefault("min", 0)
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": False}
        p["options"] = {"legend": {"showLegend": True, "displayMode": "table",
                                   "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "textMode": "auto", "orientation": "auto"}
    elif kind == "heatmap":
        p["options"] = {"calculate": False, "cellGap": 1,
                        "yAxis": {"axisPlacement": "left", "unit": "none", "decimals": 1},
                        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64,
                                  "exponent": 0.5, "fill": "dark-orange"},
                        "rowsFrame": {"layout": "auto"},
                        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
                        "legend": {"show": True},
                        "filterValues": {"le": 1e-9}}
    return p


def build():
    panels, pid, y = [], 1, 0
    for row_title, specs in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for spec in specs:
            h = 5 if spec.get("kind") == "stat" and spec["w"] <= 8 else 8
            if x + spec["w"] > 24:
                x, y = 0, y + 8
            panels.append(panel(pid, spec, x, y, h))
            pid, x = pid + 1, x + spec["w"]
        y += 8
    templating = [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
         "regex": "", "options": [], "includeAll": False, "multi": False},
        {"name": "job", "label": "Job", "type": "query", "datasource": DS,
         "definition": "label_values(slmgate_requests_total, job)",
         "query": "label_values(slmgate_requests_total, job)",
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
         "includeAll": True, "allValue": ".+", "multi": True, "refresh": 2,
         "sort": 1, "hide": 0, "regex": "", "options": []},
        {"name": "local_backend", "label": "Local backends (regex)", "type": "textbox",
         "query": "local", "current": {"text": "local", "value": "local"}, "hide": 0,
         "options": [{"selected": True, "text": "local", "value": "local"}],
         "description": "Backend names (regex) that run in-process; the default policy's is `local`."},
    ]
    return {
        "__inputs": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "slmgate: traffic, local share, latency, tokens, cost and savings, "
                       "triage, errors, local queue, shadow sampling, keys and budgets.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["slmgate", "llm"],
        "templating": {"list": templating},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "slmgate",
        "uid": "slmgate-overview",
        "version": 1,
        "weekStart": "",
    }


def main():
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv[1:]:
        if OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} is out of date: run python3 scripts/dashboard.py")
        return
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
