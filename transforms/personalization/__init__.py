"""Mode-agnostic personalization transforms: profiles, product graph, recommendations (issue #6).

Example::

    from retail_backbone.transforms.inventory.windowing import WindowingOptions
    from retail_backbone.transforms.personalization import (
        BuildCoPurchaseGraph, BuildCustomerProfiles, ExtractCatalog, Recommend)

    opts = WindowingOptions(mode="batch")
    catalog = events | "ExtractCatalog" >> ExtractCatalog(opts)
    profiles = events | "BuildCustomerProfiles" >> BuildCustomerProfiles(
        opts, catalog=catalog, hash_key="env:PII_HASH_KEY")
    graph = events | "BuildCoPurchaseGraph" >> BuildCoPurchaseGraph(opts)
    recs = {"profiles": profiles.profiles, "edges": graph.edges, "events": events,
            "catalog": catalog} | "Recommend" >> Recommend(opts)

Modules: ``profiles`` (``BuildCustomerProfiles``, ``ExtractCatalog``), ``copurchase``
(``BuildCoPurchaseGraph``), ``recommend`` (``Recommend``), ``types`` (rows). Windowing and late
data use the shared wrapper in ``transforms.inventory.windowing``.
"""

from retail_backbone.transforms.personalization.copurchase import (
    BuildCoPurchaseGraph,
    CoPurchaseResult,
    canonical_pairs,
)
from retail_backbone.transforms.personalization.profiles import (
    BuildCustomerProfiles,
    ExtractCatalog,
    ProfileCombineFn,
    ProfileResult,
    ProfileSettings,
    customer_key,
)
from retail_backbone.transforms.personalization.recommend import (
    Recommend,
    RecommendResult,
    RecommendSettings,
)
from retail_backbone.transforms.personalization.types import (
    CoPurchaseEdge,
    CustomerProfile,
    CustomerRecommendations,
    PairDay,
    ProductInfo,
    RelatedProducts,
    SessionSpan,
)

__all__ = [
    "BuildCoPurchaseGraph",
    "BuildCustomerProfiles",
    "CoPurchaseEdge",
    "CoPurchaseResult",
    "CustomerProfile",
    "CustomerRecommendations",
    "ExtractCatalog",
    "PairDay",
    "ProductInfo",
    "ProfileCombineFn",
    "ProfileResult",
    "ProfileSettings",
    "Recommend",
    "RecommendResult",
    "RecommendSettings",
    "RelatedProducts",
    "SessionSpan",
    "canonical_pairs",
    "customer_key",
]
