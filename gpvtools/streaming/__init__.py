"""The streaming machinery every stage shares: JSONL in and out, the stage loop, resume, shards, errors."""
