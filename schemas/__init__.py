"""retail_backbone.schemas."""
