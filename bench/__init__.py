"""``make bench``: the pipeline measured against the raw broker on the same machine, in one run."""
