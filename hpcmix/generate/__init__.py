"""Event generation: processes as data, seeded Pythia chunks, and their Dask mapping."""
