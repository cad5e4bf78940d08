"""retail_backbone.io."""
