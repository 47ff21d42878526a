"""Graphs written straight into the KG tables, for tests that start after the merge stage."""

from __future__ import annotations

import networkx as nx
from rows import merge_rows, row

from graphgen_spark.tables import Tables


def write_generated_graph(spark, tables: Tables) -> nx.Graph:
    """A 120-node power-law component, 30 pairs and triangles, 5 isolated entities."""
    g = nx.barabasi_albert_graph(120, 2, seed=7)
    g = nx.relabel_nodes(g, {i: f"g{i:03d}" for i in g})
    for i in range(15):
        g.add_edge(f"p{i:02d}a", f"p{i:02d}b")
        g.add_edges_from([(f"t{i:02d}a", f"t{i:02d}b"), (f"t{i:02d}b", f"t{i:02d}c")])
        g.add_edge(f"t{i:02d}a", f"t{i:02d}c")
    g.add_nodes_from(f"iso{i}" for i in range(5))
    doc = row("documents", doc_id="d1", text="t")
    chunk = row("chunks", chunk_id="c1", doc_id="d1", text="t", language="en")
    ents = [
        row(
            "entities",
            entity_id=v,
            key=v,
            name=f"Entity {v}",
            type="concept",
            description=f"Entity {v} is a thing.",
            descriptions=[f"Entity {v} is a thing."],
            summarised=False,
            n_tokens=6 + len(v),
            is_placeholder=False,
            chunk_ids=["c1"],
            doc_ids=["d1"],
        )
        for v in sorted(g)
    ]
    rels = []
    for a, b in sorted(tuple(sorted(e)) for e in g.edges):
        d = f"Entity {a} relates to Entity {b}."
        rels.append(
            row(
                "relations",
                edge_id=f"{a}-{b}",
                src_id=a,
                dst_id=b,
                src_name=f"Entity {a}",
                dst_name=f"Entity {b}",
                description=d,
                descriptions=[d],
                summarised=False,
                n_tokens=9,
                chunk_ids=["c1"],
                doc_ids=["d1"],
            )
        )
    for name, rows in [("documents", [doc]), ("chunks", [chunk]), ("entities", ents)]:
        merge_rows(tables, name, rows)
    merge_rows(tables, "relations", rels)
    return g
