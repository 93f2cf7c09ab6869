"""``anomtune export``: the best model of a run as one checked ONNX graph."""

from __future__ import annotations

from pathlib import Path

import click

from anomtune.cli.options import check_output_file, json_option, output_option
from anomtune.cli.output import print_json

__all__ = ["export_command"]


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@output_option("Where to write the .onnx file (default: RUN_DIR/model.onnx).")
@json_option("the parity report")
def export_command(run_dir, output, as_json):
    """Export the best model of RUN_DIR to ONNX: raw columns in, score out.

    The graph takes the numeric columns (float, NaN for missing) and, if any,
    the categorical columns (strings), and returns the score, each column's
    reconstruction error and the label at the stored threshold. Before the
    file is written, onnxruntime is checked against torch on the run's
    validation rows (batch sizes 1, 2 and all rows, graph optimisations on and
    off); a model whose scores differ by more than 1e-4 (relative) or whose
    labels flip is refused.

    \b
    Example:
      anomtune export runs/cardio -o cardio.onnx
    """
    from anomtune.export import export_run

    target = Path(output) if output else Path(run_dir) / "model.onnx"
    if output:  # checked before the export's work, not after it
        check_output_file("--output", target)
    data, info = export_run(run_dir, target)
    parity = info["parity"]
    if as_json:
        print_json({"path": str(target), "bytes": len(data), **info})
        return
    click.echo(
        f"wrote {target} ({len(data) / 1024:.0f} KiB); parity on {parity['rows']} checked "
        f"rows: largest relative difference {parity['max_relative_error']:.2g} "
        f"(tolerance {parity['tolerance']:g}), {parity['label_flips']} label flips"
    )
