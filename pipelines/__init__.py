"""retail_backbone.pipelines."""
