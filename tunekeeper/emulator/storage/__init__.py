"""Cloud Storage's JSON API, in memory: buckets declared at start, objects uploaded and read by clients."""
