#!/usr/bin/env python3
"""Markdown table of a design-knob study (bench/design/*.yaml run by `duplex sweep`): one row per point with its
knob, speculative-decoding, shared-prompt and cluster setting, throughput, throughput over the gpu point of the same setting, energy per token and the Logic-PIM
area per stack; a model column first when the study has several models; the prompt tokens taken from the
prefix cache in a prefix-caching study, the median time to first token in a cluster study, and the token-gap tail
and median request latency in a study of split-system knobs (`split.*`: when K/V migrations leave), the median
first-token and token-gap latencies in a two-batch-overlap study; for a capacity study
(`capacity:`) each point's highest rate within the objectives instead. Usage: bench/design/table.py
results/pim-design"""
import csv
import json
import sys
from pathlib import Path


def area_cells(folder, row):
    """(mm2 per stack, fraction of the logic die) from the point's result, or '-' for systems without a model."""
    result = json.loads((Path(folder) / "points" / f"{row['id']}.json").read_text())["result"]
    area = result.get("pim_area")
    if area is None:
        return "-", "-"
    return f"{area['per_stack_mm2']['total']:.2f}", f"{100 * area['die_fraction']:.1f}%"


def capacity_table(ok, models):
    """A capacity study's table: each point's highest rate within the objectives (">=" where no probe fell
    short), per device, over the gpu point of the same setting, and the run at that rate."""
    gpu = {(r["model"], r["input_len"], r["output_len"], r["batch"], r["setting"]): float(r["max_rate_per_s"])
           for r in ok if r["system"] == "gpu"}
    print(("| model " if models else "") + "| system | setting | devices | max req/s | per device | x gpu | "
          "within SLO | tok/s | J/token | TTFT p99 ms | TPOT p50 ms |")
    print(("|---" if models else "") + "|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ok:
        rate, devices = float(r["max_rate_per_s"]), int(r["devices"])
        base = gpu.get((r["model"], r["input_len"], r["output_len"], r["batch"], r["setting"]))
        bound = "" if r["failing_rate_per_s"] else ">="
        print((f"| {r['model']} " if models else "") + f"| {r['system']} | {r['setting'] or '-'} | {devices} | "
              f"{bound}{rate:.2f} | {rate / devices:.2f} | {f'{rate / base:.2f}' if base else '-'} | "
              f"{100 * float(r['slo_attainment']):.1f}% | {float(r['throughput_tok_s']):.0f} | "
              f"{float(r['energy_j_per_token']):.4f} | {float(r['ttft_p99_ms']):.0f} | {float(r['tpot_p50_ms']):.1f} |")


def tier_cell(r):
    """The share of the prompt tokens loaded from the host tier, and of them from other nodes and from disk."""
    if not r.get("host_hit_tokens"):
        return "-"
    query = float(r["prefix_query_tokens"])
    parts = [f"{100 * float(r[k]) / query:.1f}% {name}" for k, name in
             (("host_remote_hit_tokens", "other nodes"), ("disk_hit_tokens", "disk")) if r.get(k)]
    return f"{100 * float(r['host_hit_tokens']) / query:.1f}%" + (f" ({', '.join(parts)})" if parts else "")


def main(folder):
    rows = list(csv.DictReader((Path(folder) / "combined.csv").open()))
    for r in rows:
        if r["status"] != "ok":
            print(f"failed point {r['id']}: {r['error']}", file=sys.stderr)
    ok = [r for r in rows if r["status"] == "ok"]
    # The gpu point of the same setting: with the same knobs where the gpu has them (a knob on every system),
    # else without (a knob on the PIM systems only).
    # A speculative setting (its own column in combined.csv) is part of the point's setting, gpu's included.
    for r in ok:
        r["setting"] = "; ".join(x for x in (r["knobs"].replace(";", ", "), r.get("speculative", ""),
                                             r.get("prefix", ""), r.get("cluster", "")) if x)
    models = len({r["model"] for r in ok}) > 1
    if any(r.get("max_rate_per_s") for r in ok):
        capacity_table(ok, models)
        return 1 if len(ok) < len(rows) else 0
    gpu = {(r["model"], r["input_len"], r["output_len"], r["batch"], r["setting"]): float(r["throughput_tok_s"])
           for r in ok if r["system"] == "gpu"}
    hits = any(r.get("prefix_hit_rate") for r in ok)  # a prefix-caching study: the cache's hit rate too
    clusters = any(r.get("cluster") for r in ok)  # a cluster study: the first-token latency too
    splits = any("split." in r["knobs"] for r in ok)  # a split-system knob: the migrations' gap, the latency
    tiers = any(r.get("host_hit_tokens") for r in ok)  # a host (or disk) K/V tier: where the hits came from
    # Expert load balancing: decode latency, the busiest device's expert rows over the mean, the copies' wait.
    eplb = any(r.get("expert_imbalance") for r in ok)
    overlap = any("two_batch_overlap" in r["knobs"] for r in ok)  # two micro-batches: both latencies too
    print(("| model " if models else "") +
          "| system | knobs | L_in, L_out | batch | tok/s | x gpu | J/token | PIM area mm2/stack | of logic die |" +
          (" prompt tokens from cache |" if hits else "") + (" TTFT p50 ms |" if clusters else "") +
          (" TBT p99 ms | E2E p50 ms |" if splits else "") +
          (" prompt tokens from host memory (from other nodes, disk) |" if tiers else "") +
          (" TBT p50 ms | expert rows busiest / mean | rebalancings | waited for copies s |" if eplb else "") +
          (" TTFT p50 ms | TBT p50 ms |" if overlap else ""))
    print(("|---" if models else "") + "|---|---|---|---|---|---|---|---|---|" + ("---|" if hits else "") +
          ("---|" if clusters else "") + ("---|---|" if splits else "") + ("---|" if tiers else "") +
          ("---|---|---|---|" if eplb else "") + ("---|---|" if overlap else ""))
    for r in ok:
        tput = float(r["throughput_tok_s"])
        setting = (r["model"], r["input_len"], r["output_len"], r["batch"])
        drafts_and_prompts = "; ".join(
            x for x in (r.get("speculative", ""), r.get("prefix", ""), r.get("cluster", "")) if x)
        base = gpu.get(setting + (r["setting"],)) or gpu.get(setting + (drafts_and_prompts,))
        ratio = f"{tput / base:.2f}" if base else "-"
        mm2, die = area_cells(folder, r)
        print((f"| {r['model']} " if models else "") + f"| {r['system']} | {r['setting'] or '-'} | {r['input_len']}, {r['output_len']} | "
              f"{r['batch']} | {tput:.0f} | {ratio} | {float(r['energy_j_per_token']):.4f} | {mm2} | {die} |" +
              ((f" {100 * float(r['prefix_hit_rate']):.1f}% |" if r.get("prefix_hit_rate") else " - |") if hits else "") +
              (f" {float(r['ttft_p50_ms']):.1f} |" if clusters else "") +
              (f" {float(r['tbt_p99_ms']):.1f} | {float(r['e2e_p50_ms']):.0f} |" if splits else "") +
              (f" {tier_cell(r)} |" if tiers else "") +
              (f" {float(r['tbt_p50_ms']):.1f} | " + (f"{float(r['expert_imbalance']):.2f} | {r['expert_rebalancings']} | "
                                                      f"{float(r['expert_move_s']):.2f} |"
                                                      if r.get("expert_imbalance") else "- | - | - |")
               if eplb else "") +
              (f" {float(r['ttft_p50_ms']):.0f} | {float(r['tbt_p50_ms']):.1f} |" if overlap else ""))
    return 1 if len(ok) < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/pim-design"))
