"""Before/after gap comparison of two trainee models (e.g. a base and its fine-tune)."""

from __future__ import annotations

from pyspark.sql import functions as F

from graphgen_spark.tables import Tables


def compare_trainees(tables: Tables, before: str, after: str) -> list[dict]:
    """Mean loss, accuracy and ECE per element kind (and overall) for two trainee models,
    on the elements both have scores for."""
    g = tables.read("gap_scores").filter("status = 'ok'")
    common = (
        g.filter(F.col("trainee_model") == before)
        .select("element_id")
        .intersect(g.filter(F.col("trainee_model") == after).select("element_id"))
    )
    g = g.join(common, "element_id").filter(F.col("trainee_model").isin(before, after))
    per_kind = g.groupBy("trainee_model", "element_kind").agg(
        F.avg("loss").alias("loss"), F.avg("accuracy").alias("accuracy"), F.count("*").alias("n")
    )
    overall = (
        g.groupBy("trainee_model")
        .agg(
            F.avg("loss").alias("loss"),
            F.avg("accuracy").alias("accuracy"),
            F.count("*").alias("n"),
        )
        .withColumn("element_kind", F.lit("all"))
    )
    stats = {
        (r["trainee_model"], r["element_kind"]): r for r in per_kind.unionByName(overall).collect()
    }
    ece = {
        (r["trainee_model"], r["scope"]): r["ece"]
        for r in tables.read("calibration")
        .filter(F.col("trainee_model").isin(before, after))
        .collect()
    }
    rows = []
    for kind in ("all", "entity", "relation"):
        if (before, kind) not in stats or (after, kind) not in stats:
            continue
        b, a = stats[(before, kind)], stats[(after, kind)]
        rows.append(
            {
                "kind": kind,
                "n": b["n"],
                "loss_before": b["loss"],
                "loss_after": a["loss"],
                "accuracy_before": b["accuracy"],
                "accuracy_after": a["accuracy"],
                "ece_before": ece.get((before, kind)),
                "ece_after": ece.get((after, kind)),
            }
        )
    return rows


def format_comparison(rows: list[dict], before: str, after: str) -> str:
    def f(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:6.3f}"

    lines = [
        f"gap scores: {before}  ->  {after}",
        f"{'kind':<9}{'n':>6}  {'loss':>15}  {'accuracy':>15}  {'ECE':>15}",
    ]
    for r in rows:
        lines.append(
            f"{r['kind']:<9}{r['n']:>6}  {f(r['loss_before'])} -> {f(r['loss_after'])}"
            f"  {f(r['accuracy_before'])} -> {f(r['accuracy_after'])}"
            f"  {f(r['ece_before'])} -> {f(r['ece_after'])}"
        )
    return "\n".join(lines)
