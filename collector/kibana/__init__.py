"""Kibana content: the saved objects (data view, saved searches, Lens visualizations, a
dashboard) generated from `collector.fields`, their validation, and `setup --kibana`."""
