"""retail_backbone.transforms."""
