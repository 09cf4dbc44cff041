"""One module per DVC stage; each exposes run(cfg) -> dict of figures."""
