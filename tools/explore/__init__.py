"""The results explorer: ``python -m tools.explore`` (and ``eval.py ... --explore``) serves one page on 127.0.0.1.

* :mod:`tools.explore.catalog`: the split's images, each run's detections and their TIDE types (evaluation/tide.py),
  sorted and filtered at a score threshold;
* :mod:`tools.explore.live`: live predictions through :class:`deploy.predictor.Predictor`;
* :mod:`tools.explore.server`: the Starlette application on uvicorn, and what it refuses to serve;
* :mod:`tools.explore.launch`: loading the files, binding the port, and the glue for eval.py;
* ``static/``: the page (plain HTML, JavaScript and canvas).

docs/error_analysis.md ("In the browser") says what each view does.
"""
