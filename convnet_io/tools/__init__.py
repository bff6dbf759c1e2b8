"""What the commands do, importable: classify images (``classify``, ``preprocess``), compare runs
(``diff``), time layers (``timing``), export and validate (``export``), make datasets
(``imageset``), initial weights and forward outputs (``weights_io``). Each module imports the API and
the packages below it; the CLI calls these and prints."""
