"""retail_backbone.templates."""
