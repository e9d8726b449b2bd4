"""Data on disk: sharded Parquet, schemas, ingest readers, cleaning, chunking, BEIR loading."""
