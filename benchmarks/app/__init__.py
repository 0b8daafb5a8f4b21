"""ddrs_app: the application behind the ``ddrs`` command (``train``, ``certify``, ``compare``, ``report``)
and its Python entry point :func:`certify_model`.

Installed from ``benchmarks/app/`` under the import name ``ddrs_app``, so it never collides with a
``benchmarks`` package of the user's own project::

    from ddrs_app import certify_model

It builds on the library packages (``certify``, ``manifolds``, ``ddrs``) and never imports the analyses
or studies kept beside it in ``benchmarks/``.
"""

from .api import certify_model

__all__ = ["certify_model"]
