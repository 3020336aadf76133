#!/usr/bin/env python3
"""Evaluate every dashboard query and every loaded rule through Prometheus's
HTTP API (deploy/verify-dashboard.sh; standard library only).

Dashboard targets: Grafana variables substituted ($job -> .+, the textbox
variables -> their default, $__rate_interval -> --rate-interval,
$__interval -> the step, $__range -> the range), then a range query over
[start, end]. A target passes when Prometheus accepts it and it returns at
least one series with at least one finite value (what Grafana draws).
Rules (alerts.yaml, loaded by that Prometheus): health "ok" from
/api/v1/rules and an instant query of the expression that Prometheus
accepts (alerts may rightly return nothing).

Usage: query_panels.py PROM_URL START END DASHBOARD.json... [--rate-interval 1m] [--step 5]
Prints a markdown report; exits 1 when a panel has no data or a query fails.
"""
import json
import math
import re
import sys
import urllib.parse
import urllib.request


def api(prom, path, **params):
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def finite_series(result):
    """(series with a finite value, the largest finite value)"""
    n, top = 0, None
    for s in result:
        values = [float(v) for _, v in s.get("values") or ([s["value"]] if "value" in s else [])]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            n += 1
            top = max(finite) if top is None else max(top, max(finite))
    return n, top


def main():
    args = sys.argv[1:]
    opts = {"--rate-interval": "1m", "--step": "5"}
    for k in list(opts):
        if k in args:
            i = args.index(k)
            opts[k] = args[i + 1]
            del args[i:i + 2]
    prom, start, end, dashboards = args[0], float(args[1]), float(args[2]), args[3:]
    step = opts["--step"]
    failed = 0
    print("### Dashboard queries\n")
    print(f"Range query over {int(end - start)} s, step {step} s, $__rate_interval = {opts['--rate-interval']}.\n")
    print("| panel | title | query | series | with finite values | max | result |")
    print("|---:|---|---|---:|---:|---:|---|")
    for path in dashboards:
        d = json.load(open(path, encoding="utf-8"))
        values = {"job": ".+", "__rate_interval": opts["--rate-interval"], "__interval": f"{step}s",
                  "__range": f"{int(end - start)}s", "__range_s": str(int(end - start))}
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") in ("textbox", "custom", "constant"):
                values.setdefault(v["name"], v.get("current", {}).get("value") or v.get("query"))
        panels = list(d["panels"])
        for p in list(panels):
            panels.extend(p.get("panels", []))
        for p in panels:
            for t in p.get("targets", []):
                expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], t["expr"])
                r = api(prom, "query_range", query=expr, start=start, end=end, step=step)
                if r.get("status") != "success":
                    verdict, n, f, top = f"FAIL: {r.get('error')}", 0, 0, None
                else:
                    n = len(r["data"]["result"])
                    f, top = finite_series(r["data"]["result"])
                    verdict = "data" if f else "FAIL: no data"
                failed += not verdict.startswith("data")
                shown = "" if top is None else f"{top:.4g}"
                print(f"| {p['id']} | {p['title']} | {t['refId']} | {n} | {f} | {shown} | {verdict} |")
    print("\n### Rules loaded from deploy/prometheus/alerts.yaml\n")
    print("| rule | type | health | series now | state |")
    print("|---|---|---|---:|---|")
    rules = api(prom, "rules")
    if rules.get("status") != "success" or not rules["data"]["groups"]:
        print("| (none loaded) | | FAIL | | |")
        failed += 1
    for g in rules.get("data", {}).get("groups", []):
        for rule in g["rules"]:
            r = api(prom, "query", query=rule["query"], time=end)
            ok = rule.get("health") == "ok" and r.get("status") == "success"
            n = len(r.get("data", {}).get("result", [])) if ok else 0
            failed += not ok
            name = rule.get("name")
            state = rule.get("state", "")
            if rule.get("type") == "alerting" and rule.get("alerts"):
                state += " (" + ", ".join(
                    "/".join(f"{k}={v}" for k, v in a["labels"].items() if k not in ("alertname", "severity"))
                    for a in rule["alerts"]) + ")"
            health = rule.get("health") + ("" if ok else f": {rule.get('lastError') or r.get('error')}")
            print(f"| {name} | {rule.get('type')} | {health} | {n} | {state} |")
    print(f"\n{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
