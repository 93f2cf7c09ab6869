"""``anomtune serve``: score over HTTP with onnxruntime alone."""

from __future__ import annotations

import ipaddress
import logging

import click

from anomtune.cli.options import registry_options

__all__ = ["serve_command"]


@click.command("serve")
@click.argument("model")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="ANOMTUNE_HOST",
    show_envvar=True,
    help="Address to listen on.",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads that score the slices of a large request side by side: requests of "
    "four slices or more (12,289 rows or more for models of up to 64 encoded features, "
    "fewer for wider ones; see --max-rows).",
)
@click.option(
    "--token",
    envvar="ANOMTUNE_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on /invocations, /metadata and /reload. "
    "Prefer the environment variable: other users can see a command line.",
)
@click.option(
    "--reload-interval",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Resolve MODEL again this often and serve the new model if it changed; 0 = never. "
    "[default: 30 for NAME and NAME@ALIAS, never otherwise]",
)
@click.option(
    "--max-body-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body; larger ones get 413.",
)
@click.option(
    "--max-rows",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most rows per request; more get 413.",
)
@click.option(
    "--reject-missing",
    is_flag=True,
    help="Refuse rows with missing values (400) instead of imputing them.",
)
@registry_options(
    registry_help="The model registry (for NAME, NAME/VERSION and NAME@ALIAS).",
    files_help="Folder of model files for a database --registry [env: ANOMTUNE_REGISTRY_FILES].",
)
@click.option("--access-log", is_flag=True, help="Log every request (costs some latency).")
def serve_command(
    model,
    host,
    port,
    threads,
    token,
    reload_interval,
    max_body_mb,
    max_rows,
    reject_missing,
    registry,
    registry_files,
    access_log,
):
    """Serve MODEL over HTTP: MLflow's scoring protocol on POST /invocations.

    MODEL is a path to an .onnx file made by 'anomtune export', or a registry
    reference: NAME (newest version), NAME/VERSION or NAME@ALIAS. An alias is
    resolved again every --reload-interval seconds and on POST /reload, so a
    promotion is served without a restart; every answer names the model
    version that scored it.

    \b
    Endpoints:
      POST /invocations  score rows (JSON dataframe_split, dataframe_records,
                         instances or inputs; or text/csv); ?explain=true adds
                         per-column errors
      GET  /metadata     columns, threshold, model name and version
      POST /reload       pick up a new model version now
      GET  /ping, /health, /version, /docs, /openapi.json

    \b
    Example:
      anomtune serve cardio.onnx --port 8080
      curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_records": [{"a": 0.5, "color": "red"}]}'
    """
    import uvicorn

    from anomtune.serving import create_app

    # Model swaps and failed reloads are worth seeing without --debug.
    logging.getLogger("anomtune.serving").setLevel(logging.INFO)

    app = create_app(
        model,
        threads=threads,
        token=token,
        reload_interval=reload_interval,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_rows=max_rows,
        reject_missing=reject_missing,
        registry=registry,
        registry_files=registry_files,
    )
    info = app.state.holder.current.info
    label = f"{info.name}/{info.version}" if info.version is not None else info.name
    if not token and not _is_loopback(host):
        click.echo(
            f"anomtune: warning: listening on {host} without a token; anyone who can reach "
            "this port can score and read the model's metadata (set --token or ANOMTUNE_TOKEN)",
            err=True,
        )
    click.echo(f"serving {label} on http://{host}:{port} (Ctrl-C stops)", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        server_header=False,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
