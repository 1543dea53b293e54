"""advkit served over HTTP (the serve extra: FastAPI + uvicorn). ``model_api``: a model as a
prediction API (``advkit serve-model``)."""
