"""The measuring harness: the benchmark (``bench``, ``long_video``), the accuracy evaluation
(``evaluate``), the jobs behind ``sharpv bench`` / ``sharpv eval`` and their reports."""
