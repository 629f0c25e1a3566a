"""Shared pytest set-up: the Elasticsearch-API test server fixtures."""

pytest_plugins = ["tests.esserver.pytest_plugin"]
