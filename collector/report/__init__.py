"""`audit-collector report`: compliance reports read from Elasticsearch (read-only)."""
