"""Click commands of the `pg2kit` CLI, one module per stage."""
