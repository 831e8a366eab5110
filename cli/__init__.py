"""The ``maxq-deploy`` command line: a thin Typer layer over the library (installed as maxq_deploy.cli)."""
