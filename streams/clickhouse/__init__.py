"""ClickHouse adapters: the client and migrations runner, the sink, the clustered DDL."""
