"""Image collections as searchable indexes: embed incrementally, store, search exactly or with FAISS."""

from clipforge.index.ann import ExactIndex, FaissIndex, VectorIndex, build_index, choose_kind
from clipforge.index.embed import EmbedConfig, EmbedReport, ImageEncoder, embed_collection
from clipforge.index.lock import IndexBusyError
from clipforge.index.search import Hit, SearchConfig, Searcher, search
from clipforge.index.store import EmbeddingStore, Item

__all__ = [
    "EmbedConfig",
    "EmbedReport",
    "EmbeddingStore",
    "ExactIndex",
    "FaissIndex",
    "Hit",
    "ImageEncoder",
    "IndexBusyError",
    "Item",
    "SearchConfig",
    "Searcher",
    "VectorIndex",
    "build_index",
    "choose_kind",
    "embed_collection",
    "search",
]
