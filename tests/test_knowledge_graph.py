"""The stored knowledge graph as a GraphFrame for users: attributes, losses, and a motif
query answered as brute force says, for an output folder and for a catalog schema."""

from __future__ import annotations

import itertools
import uuid

import pytest
from rows import merge_rows, row

from graphgen_spark.graph import knowledge_graph
from graphgen_spark.jars import coordinates
from graphgen_spark.session import has_graphframes
from graphgen_spark.tables import Tables

EDGES = [("ada", "babbage"), ("babbage", "engine"), ("ada", "engine"), ("engine", "loom")]
TYPES = {"ada": "PERSON", "babbage": "PERSON", "engine": "MACHINE", "loom": "MACHINE"}


def write_kg(spark, tables: Tables) -> None:
    ents = [
        row(
            "entities",
            entity_id=v,
            name=v.title(),
            type=t,
            description=f"{v} described",
            is_placeholder=False,
            chunk_ids=[f"c-{v}"],
            doc_ids=["d1"],
        )
        for v, t in TYPES.items()
    ]
    rels = [
        row(
            "relations",
            edge_id=f"{a}-{b}",
            src_id=a,
            dst_id=b,
            src_name=a.title(),
            dst_name=b.title(),
            description=f"{a} with {b}",
            chunk_ids=["c1"],
            doc_ids=["d1"],
        )
        for a, b in EDGES
    ]
    scores = [
        row(
            "gap_scores",
            element_id=f"{a}-{b}",
            element_kind="relation",
            trainee_model="trainee@1",
            loss=0.5 + i,
        )
        for i, (a, b) in enumerate(EDGES)
    ]
    for name, rows in [("entities", ents), ("relations", rels), ("gap_scores", scores)]:
        merge_rows(tables, name, rows)


@pytest.fixture(autouse=True)
def _needs_graphframes(spark):
    if not has_graphframes(spark):
        pytest.skip(f"GraphFrames jar {coordinates()['graphframes']} is not on the classpath")


def test_a_users_motif_query_on_the_stored_graph(spark, tables):
    write_kg(spark, tables)
    g = knowledge_graph(spark, tables.output_dir)
    people_to_machines = g.find("(a)-[e]->(b)").filter("a.type = 'PERSON' AND b.type = 'MACHINE'")
    got = {(r["a"]["name"], r["e"]["loss"], r["b"]["name"]) for r in people_to_machines.collect()}
    losses = {f"{a}-{b}": 0.5 + i for i, (a, b) in enumerate(EDGES)}
    want = {
        (a.title(), losses[f"{a}-{b}"], b.title())
        for a, b in EDGES
        if TYPES[a] == "PERSON" and TYPES[b] == "MACHINE"
    }
    assert got == want
    chains = g.as_undirected().find("(x)-[]->(y); (y)-[]->(z)").filter("x.id < z.id")
    adj = {v: {b if a == v else a for a, b in EDGES if v in (a, b)} for v in TYPES}
    brute = {(x, y, z) for y in adj for x, z in itertools.permutations(adj[y], 2) if x < z}
    assert {(r["x"]["id"], r["y"]["id"], r["z"]["id"]) for r in chains.collect()} == brute
    v = g.vertices.filter("id = 'ada'").first()
    assert (v["type"], v["chunk_ids"], v["doc_ids"]) == ("PERSON", ["c-ada"], ["d1"])


def test_the_same_graph_from_a_catalog_schema(spark, tmp_path):
    db = f"kg_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE DATABASE {db} LOCATION '{tmp_path / db}'")
    try:
        in_catalog = Tables(spark, "", "spark_catalog", db)
        write_kg(spark, in_catalog)
        g = knowledge_graph(spark, catalog="spark_catalog", schema=db)
        assert g.vertices.count() == len(TYPES) and g.edges.count() == len(EDGES)
        assert {r["loss"] for r in g.edges.collect()} == {0.5, 1.5, 2.5, 3.5}
    finally:
        spark.sql(f"DROP DATABASE {db} CASCADE")


def test_a_missing_graph_is_a_clear_error(spark, tmp_path):
    with pytest.raises(ValueError, match="no entities table at .*run the merge stage"):
        knowledge_graph(spark, tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs an output folder or both catalog and schema"):
        knowledge_graph(spark)
