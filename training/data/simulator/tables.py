"""Arrow tables of the generator's output files: the impressions and the catalog."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from contract import schema
from training.data.simulator.catalog import STATIC_FEATURES, Catalog
from training.data.simulator.categories import CategoryTree
from training.data.simulator.sessions import Chunk

IMPRESSION_SCHEMA = pa.schema(
    [
        (schema.SESSION_ID, pa.int64()),
        *((name, pa.string()) for name in schema.REQUEST_COLUMNS[1:]),
        (schema.ITEM_ID, pa.string()),
        (schema.ITEM_TITLE, pa.string()),
        (schema.POSITION, pa.int32()),
        *((name, pa.float32()) for name in schema.NUMERIC_FEATURES),
        *((name, pa.string()) for name in schema.CATEGORICAL_FEATURES),
        *((name, pa.int8()) for name in schema.TASKS),
        (schema.RELEVANCE, pa.int8()),
    ]
)


class Columns:
    """String dictionaries as Arrow arrays, so row columns are `take`s (no Python loops)."""

    def __init__(self, config, tree: CategoryTree, catalog: Catalog):
        self.sub_ids = pa.array(tree.sub_ids, pa.string())
        self.top_of_sub = pa.array(tree.top_ids, pa.string()).take(pa.array(tree.sub_top))
        self.scenarios = pa.array([s.name for s in config.scenarios], pa.string())
        self.platforms = pa.array([p.name for p in config.platforms], pa.string())
        self.brands = pa.array(catalog.brand_names, pa.string()).take(pa.array(catalog.brand))
        self.item_category = self.sub_ids.take(pa.array(catalog.item_sub))
        self.catalog = catalog

    def table(self, chunk: Chunk, labels: np.ndarray, first_session: int) -> pa.Table:
        """The chunk's rows as a table of IMPRESSION_SCHEMA."""
        rows, item = chunk.rows, pa.array(chunk.item)
        numeric = np.column_stack([rows.features, chunk.lexical_overlap])
        columns = [
            pa.array(first_session + chunk.session, pa.int64()),
            pa.array(chunk.query_text, pa.string()).take(pa.array(chunk.session)),
            self.sub_ids.take(pa.array(rows.sub)),
            self.top_of_sub.take(pa.array(rows.sub)),
            self.scenarios.take(pa.array(rows.scenario)),
            self.platforms.take(pa.array(rows.platform)),
            self.catalog.item_ids.take(item),
            self.catalog.titles.take(item),
            pa.array(rows.position, pa.int32()),
            *(pa.array(numeric[:, j], pa.float32()) for j in range(numeric.shape[1])),
            self.brands.take(item),
            self.item_category.take(item),
            *(pa.array(labels[:, j], pa.int8()) for j in range(3)),
            pa.array(rows.relevance, pa.int8()),
        ]
        return pa.Table.from_arrays(columns, schema=IMPRESSION_SCHEMA)

    def catalog_table(self) -> pa.Table:
        """Every item once: id, title, sub-category, brand and static features."""
        static = {
            name: pa.array(self.catalog.static[:, j], pa.float32())
            for j, name in enumerate(STATIC_FEATURES)
        }
        return pa.table(
            {
                schema.ITEM_ID: self.catalog.item_ids,
                schema.ITEM_TITLE: self.catalog.titles,
                "item_category": self.item_category,
                "brand": self.brands,
                **static,
            }
        )
