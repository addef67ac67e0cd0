"""HTTP search server and single-page UI (needs the `serve` extra: fastapi, uvicorn, python-multipart).

Import `clipforge.serve.app` for `create_app`, `ServeConfig` and `serve`; this package itself imports
nothing, so `clipforge` works without the extra.
"""
