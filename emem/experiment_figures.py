"""Figures and the HTML report of ``emem experiment run`` (see :mod:`emem.experiment`).

Every figure is drawn on a bare matplotlib ``Figure`` (Agg, no pyplot state) and written as a
PNG that :class:`emem.report.HtmlReport` embeds, so ``report.html`` is one self-contained file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from emem.report import HtmlReport, flatten_metrics


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def topdown_with_hits(path: Path, scene: Any, xyz: np.ndarray | None, rgb: np.ndarray | None,
                      trajectories: Mapping[str, Sequence[Any]], per_label: Mapping[str, Any]) -> Path:
    """Bird's-eye map: the Gaussians (colour of the highest one per cell), the robot's paths,
    every object's ground-truth box (grey, labelled) and each category's top query hit (green
    star = success, red cross = miss), joined to the nearest box of its category."""
    from matplotlib.patches import Rectangle

    from emem.viz import rasterize_topdown

    fig = _figure(8, 8)
    ax = fig.subplots()
    if xyz is not None and len(xyz):
        _, hi = scene.bounds
        keep = (xyz[:, 2] < hi[2] - 0.3)  # drop the ceiling so the floor plan shows
        img, extent = rasterize_topdown(xyz[keep], None if rgb is None else rgb[keep], 0.03)
        ax.imshow(img, extent=extent, origin="upper", interpolation="nearest", alpha=0.85)
    labels = set(scene.labels())
    for o in scene.objects:
        if o.label not in labels:
            continue
        lo, hi = np.asarray(o.aabb_min), np.asarray(o.aabb_max)
        ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, ec="0.35", lw=1.0))
        ax.annotate(o.label, (lo[0], hi[1]), fontsize=7, color="0.25")
    colours = ["tab:orange", "tab:blue", "tab:purple"]
    for k, (name, poses) in enumerate(trajectories.items()):
        P = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        if len(P):
            ax.plot(P[:, 0, 3], P[:, 1, 3], "-", color=colours[k % 3], lw=1.3, label=name)
            ax.plot(P[0, 0, 3], P[0, 1, 3], "o", color=colours[k % 3], ms=5)
    for label, v in per_label.items():
        if not v.get("hits"):
            continue
        p = np.asarray(v["hits"][0]["position"])
        ok = bool(v.get("success"))
        ax.plot(p[0], p[1], "*" if ok else "X", color="tab:green" if ok else "tab:red", ms=12, mec="k")
        ax.annotate(f"{label} ({v['distance_m']:.2f} m)", (p[0], p[1]), textcoords="offset points", xytext=(6, -8),
                    fontsize=7, color="darkgreen" if ok else "darkred")
    ax.plot([], [], "*", color="tab:green", mec="k", label="top hit within radius")
    ax.plot([], [], "X", color="tab:red", mec="k", label="top hit missed")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.legend(loc="best", fontsize=7)
    ax.set_title("robot paths, object boxes (ground truth) and text-query hits")
    return _save(fig, path)


def render_vs_real(path: Path, real: np.ndarray, rendered: np.ndarray, heat: np.ndarray | None,
                   text: str | None) -> Path:
    """Simulator image | M3 render at the same held-out pose | text heat map over the render."""
    n = 3 if heat is not None else 2
    fig = _figure(4 * n, 3.4)
    axes = fig.subplots(1, n)
    axes[0].imshow(real)
    axes[0].set_title("simulator (held-out pose)")
    axes[1].imshow(rendered)
    axes[1].set_title("M3 render")
    if heat is not None:
        axes[2].imshow(rendered)
        im = axes[2].imshow(heat, cmap="inferno", alpha=0.6, vmin=float(np.min(heat)), vmax=float(np.max(heat)))
        axes[2].set_title(f"heat map: {text!r}")
        fig.colorbar(im, ax=axes[2], fraction=0.035)
    for a in axes:
        a.axis("off")
    return _save(fig, path)


METHOD_COLOURS = {"favor": "tab:red", "baseline": "tab:blue"}


def error_cdf(path: Path, results: Mapping[str, Any], max_cm: float = 100.0) -> Path:
    """Translation / rotation error CDFs: colour = method, solid = mapping lighting, dashed = changed
    lighting; a curve ends below 1 by the fraction of failed queries."""
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2)
    for name, r in sorted(results.items()):
        for ax, key in zip(axes, ("errors_cm", "errors_deg")):
            e = np.sort(np.asarray(r[key], dtype=float))
            y = np.arange(1, len(e) + 1) / max(len(e), 1)
            fin = np.isfinite(e)
            method, _, lighting = name.partition("/")
            colour = METHOD_COLOURS.get(method, "tab:gray")
            style = "--" if lighting.startswith("changed") else "-"
            ax.step(np.r_[0.0, e[fin]], np.r_[0.0, y[fin]], style, color=colour, where="post",
                    label=f"{name} (failed {100 * (1 - fin.mean()):.0f}%)")
    axes[0].set_xlim(0, max_cm)
    axes[0].set_xlabel("translation error [cm]")
    axes[1].set_xlim(0, max_cm / 5)
    axes[1].set_xlabel("rotation error [deg]")
    for ax in axes:
        ax.set_ylabel("fraction of queries")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def episodic_bars(path: Path, per_strategy: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Path:
    """Mean task accuracy per write strategy, one group of bars per budget."""
    strategies = list(per_strategy)
    budgets = sorted({b for d in per_strategy.values() for b in d}, key=int)
    fig = _figure(8, 3.6)
    ax = fig.subplots()
    w = 0.8 / max(len(strategies), 1)
    x = np.arange(len(budgets))
    for i, s in enumerate(strategies):
        vals = [per_strategy[s].get(b, {}).get("mean", np.nan) for b in budgets]
        ax.bar(x + (i - (len(strategies) - 1) / 2) * w, vals, w, label=s)
    ax.set_xticks(x, [f"budget {b}" for b in budgets])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean accuracy over tasks")
    ax.legend(fontsize=7, ncol=len(strategies))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def timing_bars(path: Path, timing: Mapping[str, float]) -> Path:
    """Seconds per stage (horizontal bars, in run order)."""
    names = list(timing)
    fig = _figure(7, 0.35 * len(names) + 1.0)
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.barh(y, [timing[n] for n in names], color="tab:blue")
    ax.set_yticks(y, names)
    for yi, n in zip(y, names):
        ax.annotate(f"{timing[n]:.1f} s", (timing[n], yi), xytext=(3, -3), textcoords="offset points", fontsize=7)
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def session_bars(path: Path, rows: Mapping[str, tuple[float | None, float | None]]) -> Path:
    """Session 1 vs session 2 per metric (missing values are left out)."""
    names = [k for k, (a, b) in rows.items() if a is not None or b is not None]
    fig = _figure(7, 3.4)
    ax = fig.subplots()
    x = np.arange(len(names))
    a = [rows[n][0] if rows[n][0] is not None else np.nan for n in names]
    b = [rows[n][1] if rows[n][1] is not None else np.nan for n in names]
    ax.bar(x - 0.2, a, 0.4, label="session 1")
    ax.bar(x + 0.2, b, 0.4, label="session 2 (fresh process, loaded maps)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------------------------- report


def _stage_rows(stages: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"stage": k, "status": v["status"], "seconds": v["seconds"], "error": v.get("error", "")}
            for k, v in stages.items()]


def write_report(out: Path, metrics: dict[str, Any], scene: Any, frames: Sequence[Any] | None, m3: Any) -> Path:
    """``out/report.html`` (+ its PNGs under ``out/figures``) from the metrics of a run."""
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    cfg = metrics.get("config", {})
    rep = HtmlReport(f"embodied_memory experiment: {metrics.get('name', '')}",
                     f"scene {cfg.get('scene')} seed {cfg.get('seed')}, transport {metrics.get('transport')}, "
                     f"{metrics.get('wall_seconds', 0):.0f} s wall")
    h = metrics.get("headline", {})
    good = {}
    if "multi_session_ok" in h:
        good["multi_session_ok"] = bool(h["multi_session_ok"])
    rep.section("Headline").cards({k: v for k, v in h.items() if v is not None}, good).cards(
        {"all stages ok": metrics.get("all_stages_ok")}, {"all stages ok": bool(metrics.get("all_stages_ok"))})

    sec = rep.section("Map, path and text queries")
    q = metrics.get("queries", {})
    if scene is not None and frames:
        xyz = rgb = None
        if m3 is not None and getattr(m3, "num_gaussians", 0):
            xyz, rgb = m3.gaussian_points()
        trajs = {"session 1 (explore)": [f.T_world_camera for f in frames]}
        if metrics.get("session2", {}).get("poses"):
            trajs["session 2 (loop)"] = metrics["session2"]["poses"]
        sec.figure(topdown_with_hits(figdir / "topdown.png", scene, xyz, rgb, trajs, q.get("per_label", {})),
                   "Top-down: Gaussians, robot paths, ground-truth object boxes and the top hit per category.")
    if q:
        sec.cards({"query success": q["success_rate"], "categories": q["categories"],
                   "median distance m": q.get("median_distance_m"), "query ms": q.get("query_ms")})
        sec.table([{"category": k, "success": v["success"], "distance_m": v["distance_m"],
                    "score": v.get("score"), "hits": len(v.get("hits", []))} for k, v in q["per_label"].items()])

    v = metrics.get("views")
    if v:
        rep.section("Rendered vs real").figure(out / v["figure"], f"PSNR {v['psnr_db']:.2f} dB; heat map of "
                                               f"{v['heatmap_text']!r}").cards({"PSNR dB": v["psnr_db"]})

    k = metrics.get("kidnap")
    if k:
        sec = rep.section("Kidnapped robot: relocalization")
        sec.figure(error_cdf(figdir / "reloc_cdf.png", k["results"]),
                   f"{k['queries']} held-out views, no prior; red = FaVoR, blue = keyframe baseline; "
                   "solid = mapping lighting, dashed = changed lighting.")
        sec.table([{"method/lighting": name, **{c: r[c] for c in ("median_cm", "median_deg", "recall_5cm_5deg",
                                                                   "recall_10cm_10deg", "failure_rate", "success_rate",
                                                                   "query_ms")}}
                   for name, r in sorted(k["results"].items())])
        maps = metrics.get("reloc_maps", {})
        if maps:
            sec.table([{"map": n, **{c: m.get(c) for c in ("size", "map_bytes", "build_seconds")}} for n, m in maps.items()])

    e = metrics.get("episodic")
    if e:
        sec = rep.section("Episodic memory: accuracy per strategy and budget")
        sec.figure(episodic_bars(figdir / "episodic.png", e["per_strategy"]),
                   f"{e['steps']} steps, {e['places']} places, {e['queries_per_task']} queries per task "
                   f"({', '.join(e['tasks'])}).")
        rows = []
        for s, d in e["per_strategy"].items():
            for b, accs in d.items():
                rows.append({"strategy": s, "budget": b, **accs})
        sec.table(rows)
        if "online" in e:
            sec.text("The memory that ran online during the stream:").table([e["online"]])
        sec.text(f"Seen categories in the reader's vocabulary: {', '.join(e['labels_in_vocab']) or 'none'} "
                 f"(of {', '.join(e['labels_seen'])}).")

    s2 = metrics.get("session2")
    ms = metrics.get("multi_session")
    if s2 and ms:
        sec = rep.section("Session 2 (fresh process, loaded maps) vs session 1")
        rr = s2.get("restart_reloc", {})
        rows = {
            "query success": (ms["session1_query_success"], ms["session2_query_success_after"]),
            "episodic online": (ms["session1_episodic_online"], ms["session2_episodic_online"]),
            "FaVoR reloc success": (metrics.get("kidnap", {}).get("results", {}).get("favor/mapping_lighting", {})
                                    .get("success_rate"), rr.get("favor", {}).get("success_rate")),
        }
        sec.figure(session_bars(figdir / "sessions.png", rows), "Session 2 values after mapping its loop episode; "
                   "FaVoR success: kidnap views (session 1) vs restart views (session 2).")
        sec.cards({c: ok for c, ok in ms["checks"].items()}, {c: bool(ok) for c, ok in ms["checks"].items()})
        sec.table([{"metric": n, "session 1": a, "session 2": b} for n, (a, b) in rows.items()]
                  + [{"metric": "query success right after loading", "session 1": ms["session1_query_success"],
                      "session 2": ms["session2_query_success_loaded"]}])
        sec.json({"session2_pid": s2.get("pid"), "timing_s": s2.get("timing_s"), "stream": s2.get("stream")})

    sec = rep.section("Timing per stage")
    timing = metrics.get("timing_s", {})
    if timing:
        sec.figure(timing_bars(figdir / "timing.png", timing), "Wall seconds per stage of this run.")
    sec.table(_stage_rows(metrics.get("stages", {})))
    sec.json({"machine_start": metrics.get("machine_start"), "machine_end": metrics.get("machine_end")})

    flat = [{"metric": k, "value": v} for k, v in flatten_metrics({x: metrics[x] for x in ("stream", "reloc_maps")
                                                                  if x in metrics})]
    rep.section("Stream and maps").table(flat)
    return rep.write(out / "report.html")
