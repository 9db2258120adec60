"""The dataset contract of DESIGN.md: one row per impression, the column names every part shares.

Readers map real data sets onto these columns; the synthetic generator writes them directly;
training reads them; loadtest builds its traffic from them. The real data sets themselves
live outside the repository: `shared_data_dir()`.
"""

import os
from pathlib import Path

from contract.features import PLATFORM, QUERY_CATEGORY, SCENARIO, TOP_CATEGORY

# Request-level columns: the same for every row of a session (one query's result list). The
# categorical four (query_category, top_category, scenario, platform) are the request fields
# the service receives, so their names are contract.features'.
SESSION_ID = "session_id"
QUERY_TEXT = "query_text"

# Item-level columns.
ITEM_ID = "item_id"
ITEM_TITLE = "item_title"
POSITION = "position"  # 0-based rank at which the item was shown

# Features the generator writes; readers of real data declare their own.
NUMERIC_FEATURES = (
    "log_price",
    "sales_volume",
    "good_comment_ratio",
    "brand_popularity",
    "rating",
    "log_review_count",
    "discount",
    "hist_ctr",
    "lexical_overlap",
)
CATEGORICAL_FEATURES = ("brand", "item_category")

# Labels: the cascade click -> atc -> purchase (a later stage implies the earlier).
TASKS = ("click", "atc", "purchase")
RELEVANCE = "relevance"  # graded 0..3

REQUEST_COLUMNS = (SESSION_ID, QUERY_TEXT, QUERY_CATEGORY, TOP_CATEGORY, SCENARIO, PLATFORM)
ITEM_COLUMNS = (ITEM_ID, ITEM_TITLE, POSITION)

# Where the real data sets live: $MOERANK_SHARED_DATA, else `../shared/data` beside a checkout.
SHARED_DATA_ENV = "MOERANK_SHARED_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """$MOERANK_SHARED_DATA, else `<repo>/../shared/data`; None when that is not a directory."""
    configured = os.environ.get(SHARED_DATA_ENV)
    candidate = Path(configured) if configured else _REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None
