"""The graph queries of the design, each in two formulations: GraphFrames and DataFrame joins.

Every stage that asks a question of the graph (components, degrees, 2-hop paths, k-hop
neighbourhoods, label propagation) asks it of a :class:`GraphQueries`, which runs the
formulation ``graph.engine`` chooses: ``graphframes``, ``dataframe``, or ``auto`` (the faster
one measured on our graphs for the graph's size, :data:`GRAPHFRAMES_FROM`, when the
GraphFrames jar is on the classpath; and the components of a graph of at most
:data:`LOCAL_MAX_EDGES` edges by union-find on the driver, recorded as ``local``).
Both formulations return the same rows in the same types, so nothing downstream can tell
them apart except by the engine names recorded in ``graph_stats`` and ``subgraphs``:

- components are labelled by the smallest entity id in the component (a string);
- label propagation is synchronous, each vertex taking the most frequent label among its
  neighbours, ties to the smallest label (GraphFrames' own rule), on vertex indexes in id
  order, so both formulations give the same labels;
- neighbourhoods are ``(seed_id, id, hop)`` with the smallest hop count.

GraphFrames checkpoints its iterative plans (connected components, label propagation) into
the checkpoint folder it is given: the stage's scratch folder on the output's filesystem, so
checkpoints survive on shared storage on a cluster and are removed with the scratch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from graphgen_spark.session import has_graphframes

GRAPHFRAMES = "graphframes"
DATAFRAME = "dataframe"
ENGINES = ("auto", GRAPHFRAMES, DATAFRAME)
OPS = (
    "components", "degrees", "triplets", "two_hop_paths", "neighbourhood", "label_propagation",
)  # fmt: skip

# Under `graph.engine: auto`, GraphFrames answers a query when the graph has at least this
# many relations (None: never). From bench/results/graph_engines.json (power-law graphs,
# local[2], a quiet machine), ratio = GraphFrames s / DataFrame s in one run at 10k / 100k / 1M
# relations; the threshold is the smallest measured size from which GraphFrames was faster at
# every larger measured size.
GRAPHFRAMES_FROM: dict[str, int | None] = {
    "components": 1_000_000,  # 2.87 / 1.11 / 0.45: two-phase CC beats one join per diameter step
    "degrees": None,  # 0.69 / 1.12 / 1.19: one aggregation either way, within a second
    "triplets": 10_000,  # 0.99 / 0.74 / 0.90: the same two joins, GraphFrames' plan a bit leaner
    "two_hop_paths": None,  # 1.51 / 1.28 / 2.56: find joins every pattern vertex back in
    "neighbourhood": None,  # 2.02 / 3.26 / 2.69: aggregateMessages joins the vertices 3 times a hop
    "label_propagation": None,  # 1.35 / 1.39 / 1.07: Pregel's set-up and checkpoints per round
}

Keep = Callable[[DataFrame], DataFrame]
#: Under ``auto``, the components of a graph with at most this many edges are found on the
#: driver: union-find over the collected edges takes milliseconds where each join step of
#: a distributed formulation takes seconds. The near-duplicate clusters use the same bound.
LOCAL_MAX_EDGES = 100_000
LOCAL = "local"
#: GraphFrames' iterative algorithms persist and checkpoint each round, and adaptive
#: execution cannot coalesce the shuffles of a cached or checkpointed plan: each round ran
#: ``spark.sql.shuffle.partitions`` tasks (200 on a cluster for a 60-edge graph). While
#: they run, a shuffle gets one partition per this many edges, at least the task slots and
#: at most the configured count.
EDGES_PER_PARTITION = 100_000


def local_keep(df: DataFrame) -> DataFrame:
    """The default for callers without a scratch folder (tests, benches). ``localCheckpoint``
    blocks die with their executor, so stages pass ``keep`` (their ``Scratch.materialise``)
    and every intermediate of a query goes through it."""
    return df.localCheckpoint(eager=True)


def local_components(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find: every id of ``pairs`` -> the smallest id of its connected component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller root wins, so a root is always its component's minimum
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def symmetrised(edges: DataFrame, *extra: str) -> DataFrame:
    """Both directions of undirected ``(src, dst, *extra)`` edges."""
    back = edges.select(F.col("dst").alias("src"), F.col("src").alias("dst"), *extra)
    return edges.select("src", "dst", *extra).unionByName(back)


def vertex_index(v: DataFrame, keep: Keep = local_keep) -> DataFrame:
    """``(id, idx)``: each vertex's 0-based position in id order (a total order, distributed);
    ``keep`` materialises the sorted rows."""
    from graphgen_spark.partition.distributed import global_position

    index = global_position(v.select("id"), [F.col("id")], "idx", keep)
    return index.withColumn("idx", F.col("idx") - 1)


class DataFrameGraph:
    """Every query as plain joins and aggregations: runs on any Spark, no extra jar."""

    name = DATAFRAME

    def __init__(self, keep: Keep | None = None) -> None:
        self.keep = keep or local_keep

    def components(self, v: DataFrame, e: DataFrame, max_iter: int = 1000) -> DataFrame:
        """Min-label propagation over undirected edges until no label changes."""
        both = symmetrised(e)
        labels = self.keep(v.select("id", F.col("id").alias("component")))
        for _ in range(max_iter):
            incoming = (
                both.join(labels, both.src == labels.id)
                .groupBy(both.dst.alias("id"))
                .agg(F.min("component").alias("cand"))
            )
            new = self.keep(
                labels.join(incoming, "id", "left").select(
                    "id", F.least("component", F.coalesce("cand", "component")).alias("component")
                )
            )
            changed = (
                new.join(labels.withColumnRenamed("component", "old"), "id")
                .filter("component <> old")
                .limit(1)
                .count()
            )
            labels = new
            if not changed:
                break
        return labels

    def degrees(self, v: DataFrame, e: DataFrame) -> DataFrame:
        ends = e.select(F.explode(F.array("src", "dst")).alias("id"))
        deg = ends.groupBy("id").agg(F.count("*").cast("int").alias("degree"))
        return v.select("id").join(deg, "id", "left").fillna(0, ["degree"])

    def triplets(self, v: DataFrame, e: DataFrame) -> DataFrame:
        row = F.struct(*v.columns)
        src = v.select(F.col("id").alias("src"), row.alias("a"))
        dst = v.select(F.col("id").alias("dst"), row.alias("b"))
        edge = e.select("src", "dst", F.struct(*e.columns).alias("e"))
        return edge.join(src, "src").join(dst, "dst").select("a", "e", "b")

    def two_hop_paths(self, v: DataFrame, e: DataFrame) -> DataFrame:
        s = symmetrised(e, "edge_id")
        first = s.select(
            F.col("src").alias("a"), F.col("edge_id").alias("e1"), F.col("dst").alias("b")
        )
        second = s.select(
            F.col("src").alias("b"), F.col("edge_id").alias("e2"), F.col("dst").alias("c")
        )
        return first.join(second, "b").filter("a != c").select("a", "e1", "b", "e2", "c")

    def neighbourhood(self, v: DataFrame, e: DataFrame, starts: DataFrame, hops: int) -> DataFrame:
        """Frontier joins: hop ``h`` is the unseen neighbours of hop ``h - 1``."""
        both = symmetrised(e)
        reached = self.keep(starts.select("seed_id", "id", F.lit(0).alias("hop")).distinct())
        frontier = reached
        for h in range(1, hops + 1):
            step = (
                frontier.join(both, frontier.id == both.src)
                .select("seed_id", F.col("dst").alias("id"))
                .distinct()
                .join(reached.select("seed_id", "id"), ["seed_id", "id"], "left_anti")
                .withColumn("hop", F.lit(h))
            )
            frontier = self.keep(step)
            reached = self.keep(reached.unionByName(frontier))
        return reached

    def label_propagation(self, v: DataFrame, e: DataFrame, max_iter: int) -> DataFrame:
        index = self.keep(vertex_index(v, self.keep))
        both = symmetrised(e)
        idx_e = (
            both.join(index.withColumnsRenamed({"id": "src", "idx": "s"}), "src")
            .join(index.withColumnsRenamed({"id": "dst", "idx": "d"}), "dst")
            .select("s", "d")
        )
        labels = self.keep(index.select(F.col("idx").alias("i"), F.col("idx").alias("label")))
        best = Window.partitionBy("i").orderBy(F.desc("n"), "label")
        for _ in range(max_iter):
            votes = (
                idx_e.join(labels.withColumnRenamed("i", "s"), "s")
                .groupBy(F.col("d").alias("i"), "label")
                .agg(F.count("*").alias("n"))
                .withColumn("r", F.row_number().over(best))
                .filter("r = 1")
                .select("i", F.col("label").alias("new"))
            )
            new = self.keep(
                labels.join(votes, "i", "left").select(
                    "i", F.coalesce("new", "label").alias("label"), F.col("label").alias("old")
                )
            )
            changed = new.filter("label <> old").limit(1).count()
            labels = new.select("i", "label")
            if not changed:
                break
        return _labels_by_id(index, labels.withColumnRenamed("i", "idx"))


def sized_shuffles(method: Callable[..., DataFrame]) -> Callable[..., DataFrame]:
    """Run a ``GraphFramesGraph`` method on edges ``e`` with ``spark.sql.shuffle.partitions``
    sized to the graph (:data:`EDGES_PER_PARTITION`), then the configured value again."""

    @functools.wraps(method)
    def run(self: GraphFramesGraph, v: DataFrame, e: DataFrame, *args) -> DataFrame:
        key, conf = "spark.sql.shuffle.partitions", self.spark.conf
        configured = conf.get(key)
        wanted = max(
            self.spark.sparkContext.defaultParallelism, -(-e.count() // EDGES_PER_PARTITION)
        )
        conf.set(key, str(min(int(configured), wanted)))
        try:
            return method(self, v, e, *args)
        finally:
            conf.set(key, configured)

    return run


class GraphFramesGraph:
    """Every query on a ``GraphFrame`` (GraphFrames 0.11): needs its jar on the classpath.

    Iterative algorithms checkpoint into ``checkpoint_dir`` (reliable checkpoints on the
    output's filesystem, not local ones, so a lost executor does not lose the lineage).
    """

    name = GRAPHFRAMES

    def __init__(self, spark: SparkSession, checkpoint_dir: str, keep: Keep | None = None) -> None:
        self.spark = spark
        self.keep = keep or local_keep
        self.checkpoint_dir = checkpoint_dir
        spark.sparkContext.setCheckpointDir(checkpoint_dir)

    @staticmethod
    def graph(v: DataFrame, e: DataFrame):
        from graphframes import GraphFrame

        return GraphFrame(v, e)

    @sized_shuffles
    def components(self, v: DataFrame, e: DataFrame) -> DataFrame:
        """Two-phase connected components with AQE-sized joins (``broadcastThreshold=-1``),
        labelled by the smallest vertex id (``useLabelsAsComponents``)."""
        found = self.graph(v.select("id"), e.select("src", "dst")).connectedComponents(
            algorithm="two_phase",
            broadcastThreshold=-1,
            useLabelsAsComponents=True,
            checkpointInterval=2,
            max_iter=2**31 - 2,  # graphframes-py's own default is 2 ^ 31 - 2, which is 31
        )
        out = self.keep(found.select("id", F.col("component").cast("string").alias("component")))
        found.unpersist()
        return out

    def degrees(self, v: DataFrame, e: DataFrame) -> DataFrame:
        deg = self.graph(v.select("id"), e.select("src", "dst")).degrees
        return (
            v.select("id")
            .join(deg, "id", "left")
            .select("id", F.coalesce(F.col("degree"), F.lit(0)).cast("int").alias("degree"))
        )

    def triplets(self, v: DataFrame, e: DataFrame) -> DataFrame:
        return self.graph(v, e).find("(a)-[e]->(b)")

    def two_hop_paths(self, v: DataFrame, e: DataFrame) -> DataFrame:
        g = self.graph(v.select("id"), symmetrised(e, "edge_id"))
        found = g.find("(a)-[e1]->(b); (b)-[e2]->(c)").filter("a.id != c.id")
        return found.select(
            F.col("a.id").alias("a"),
            F.col("e1.edge_id").alias("e1"),
            F.col("b.id").alias("b"),
            F.col("e2.edge_id").alias("e2"),
            F.col("c.id").alias("c"),
        )

    @sized_shuffles
    def neighbourhood(self, v: DataFrame, e: DataFrame, starts: DataFrame, hops: int) -> DataFrame:
        """``aggregateMessages`` rounds: each vertex sends the seeds it holds to its neighbours
        and keeps the ones new to it (a deduplicated BFS, unlike path-enumerating
        ``AggregateNeighbors``, whose states multiply at hubs)."""
        from graphframes.lib import AggregateMessages as AM

        both = symmetrised(e.select("src", "dst"))
        reached = self.keep(starts.select("seed_id", "id", F.lit(0).alias("hop")).distinct())
        frontier = reached
        for h in range(1, hops + 1):
            holding = frontier.groupBy("id").agg(F.collect_set("seed_id").alias("seeds"))
            verts = v.select("id").join(holding, "id", "left")
            # only the frontier's edges can carry a message: the triplets are built from those
            out_edges = both.join(frontier.select(F.col("id").alias("src")), "src", "left_semi")
            sent = self.graph(verts, out_edges).aggregateMessages(
                [F.flatten(F.collect_list(AM.msg)).alias("seeds")],
                sendToDst=[F.when(AM.src["seeds"].isNotNull(), AM.src["seeds"])],
            )
            step = (
                sent.select("id", F.explode("seeds").alias("seed_id"))
                .distinct()
                .join(reached.select("seed_id", "id"), ["seed_id", "id"], "left_anti")
                .select("seed_id", "id", F.lit(h).alias("hop"))
            )
            frontier = self.keep(step)
            reached = self.keep(reached.unionByName(frontier))
        return reached

    @sized_shuffles
    def label_propagation(self, v: DataFrame, e: DataFrame, max_iter: int) -> DataFrame:
        """GraphFrames' Pregel label propagation on long vertex indexes (its tie-break needs
        numeric labels), messages both ways over the symmetrised edges."""
        index = self.keep(vertex_index(v, self.keep))
        both = symmetrised(e)
        idx_e = both.join(index.withColumnsRenamed({"id": "src", "idx": "s"}), "src").join(
            index.withColumnsRenamed({"id": "dst", "idx": "d"}), "dst"
        )
        g = self.graph(
            index.select(F.col("idx").alias("id")),
            idx_e.select(F.col("s").alias("src"), F.col("d").alias("dst")),
        )
        found = g.labelPropagation(maxIter=max_iter, algorithm="graphframes", checkpoint_interval=2)
        # a vertex that hears nothing keeps its own label (Pregel leaves it NULL)
        label = F.coalesce(F.col("label").cast("long"), F.col("id"))
        labels = self.keep(found.select(F.col("id").alias("idx"), label.alias("label")))
        found.unpersist()
        return _labels_by_id(index, labels)


def _labels_by_id(index: DataFrame, labels: DataFrame) -> DataFrame:
    """``(id, label)`` with each label named by the smallest id carrying it."""
    by_id = index.join(labels, "idx").select("id", "label")
    names = by_id.groupBy("label").agg(F.min("id").alias("name"))
    return by_id.join(names, "label").select("id", F.col("name").alias("label"))


def _local_labels(v: DataFrame, comps: dict[str, str]) -> DataFrame:
    """``(id, component)`` of every vertex from union-find labels (isolated: its own id)."""
    found = v.sparkSession.createDataFrame(sorted(comps.items()), "id string, component string")
    return (
        v.select("id")
        .join(found, "id", "left")
        .select("id", F.coalesce("component", "id").alias("component"))
    )


def auto_choice(op: str, relations: int) -> str:
    """``graph.engine: auto``'s formulation for ``op`` on a graph of ``relations`` edges."""
    threshold = GRAPHFRAMES_FROM[op]
    return GRAPHFRAMES if threshold is not None and relations >= threshold else DATAFRAME


class GraphQueries:
    """The configured formulation per query, and a record of which one answered each.

    ``engine`` is ``graph.engine``: ``graphframes`` (the jar must be present), ``dataframe``,
    or ``auto`` (per query and graph size as :data:`GRAPHFRAMES_FROM` says where the jar is
    present, DataFrame joins where not). ``keep`` is the checkpoint policy of both
    formulations and of whatever iterates on their answers (the round engines of
    :mod:`graphgen_spark.partition.distributed`): a stage passes its ``Scratch.materialise``.
    """

    def __init__(
        self, spark: SparkSession, engine: str, checkpoint_dir: str, keep: Keep | None = None
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"graph.engine must be one of {ENGINES}, got {engine!r}")
        self.present = has_graphframes(spark)
        if engine == GRAPHFRAMES and not self.present:
            from graphgen_spark.session import require_graphframes

            require_graphframes(spark)
        self.choice = engine
        self.keep = keep or local_keep
        self.dataframe = DataFrameGraph(self.keep)
        self.graphframes = (
            GraphFramesGraph(spark, checkpoint_dir, self.keep) if self.present else None
        )
        self.used: dict[str, str] = {}

    def engine_for(self, op: str, e: DataFrame) -> DataFrameGraph | GraphFramesGraph:
        """The formulation for ``op`` on edges ``e`` (counted only under ``auto``)."""
        if self.graphframes is None or self.choice == DATAFRAME:
            chosen = DATAFRAME
        elif self.choice == GRAPHFRAMES:
            chosen = GRAPHFRAMES
        else:
            chosen = auto_choice(op, e.count())
        self.used[op] = chosen
        return self.graphframes if chosen == GRAPHFRAMES else self.dataframe  # type: ignore[return-value]

    def components(self, v: DataFrame, e: DataFrame) -> DataFrame:
        """``(id, component)`` for vertices ``v(id)`` and undirected edges ``e(src, dst)``;
        under ``auto``, a graph of at most :data:`LOCAL_MAX_EDGES` edges on the driver."""
        if self.choice == "auto":
            ids = v.select("id")
            inner = e.join(ids.withColumnRenamed("id", "src"), "src").join(
                ids.withColumnRenamed("id", "dst"), "dst"
            )
            few = inner.select("src", "dst").limit(LOCAL_MAX_EDGES + 1).collect()
            if len(few) <= LOCAL_MAX_EDGES:
                self.used["components"] = LOCAL
                return _local_labels(v, local_components([(r[0], r[1]) for r in few]))
        return self.engine_for("components", e).components(v, e)

    def degrees(self, v: DataFrame, e: DataFrame) -> DataFrame:
        """``(id, degree)`` for every vertex, 0 for isolated ones."""
        return self.engine_for("degrees", e).degrees(v, e)

    def triplets(self, v: DataFrame, e: DataFrame) -> DataFrame:
        """Every edge with its endpoints: the motif ``(a)-[e]->(b)``, columns ``a``, ``e``,
        ``b`` holding the vertex and edge rows as structs (GraphFrames' shape)."""
        return self.engine_for("triplets", e).triplets(v, e)

    def two_hop_paths(self, v: DataFrame, e: DataFrame) -> DataFrame:
        """Every path ``a -e1- b -e2- c`` with ``a != c`` over ``e(src, dst, edge_id)``, both
        orders: the motif ``(a)-[e1]->(b); (b)-[e2]->(c)`` on symmetrised edges."""
        return self.engine_for("two_hop_paths", e).two_hop_paths(v, e)

    def neighbourhood(self, v: DataFrame, e: DataFrame, starts: DataFrame, hops: int) -> DataFrame:
        """``(seed_id, id, hop)``: the vertices within ``hops`` of each seed's start vertices
        ``starts(seed_id, id)``, at their smallest hop count."""
        return self.engine_for("neighbourhood", e).neighbourhood(v, e, starts, hops)

    def label_propagation(self, v: DataFrame, e: DataFrame, max_iter: int = 20) -> DataFrame:
        """``(id, label)``: synchronous label propagation for at most ``max_iter`` rounds."""
        return self.engine_for("label_propagation", e).label_propagation(v, e, max_iter)
