"""``anomtune space``: print the default search space, or a refined one."""

from __future__ import annotations

import click

from anomtune.cli.options import file_option, json_option, output_option

__all__ = ["space_command"]


@click.command("space")
@file_option(
    "--data",
    "data_path",
    help="Size widths and the bottleneck to this CSV's columns.",
)
@click.option("--label", metavar="COLUMN", help="With --data: the label column, not a feature.")
@click.option(
    "--features",
    "n_features",
    type=int,
    default=32,
    show_default=True,
    help="Number of encoded features to size the space for, without --data.",
)
@click.option(
    "--refine",
    "run_dir",
    type=click.Path(file_okay=False),
    help="Narrow the space of a finished run around its best quarter of trials.",
)
@output_option("Write here, not stdout.")
@json_option("the space", " instead of TOML (-o still writes the TOML file)")
def space_command(data_path, label, n_features, run_dir, output, as_json):
    """Print a search space as an editable TOML file for 'anomtune tune --space'.

    Without --refine it is the default space (every variant with its own
    parameters). With --refine RUN_DIR it is that run's space narrowed to
    what its top quarter of completed trials used: ranges shrink to the
    values those trials took, and choices none of them took are dropped.

    \b
    Examples:
      anomtune space --data datasets/cardio.csv --label is_anomaly > space.toml
      anomtune space --refine runs/cardio -o finer.toml
      anomtune tune datasets/cardio.csv --label is_anomaly --space finer.toml --study cardio-2
      anomtune space --features 10 --json
    """
    from anomtune.errors import ConfigError
    from anomtune.space import default_space
    from anomtune.tuning import SPACE_HEADER

    if run_dir is not None:
        from anomtune.run import RunFolder
        from anomtune.tuning import refine_space

        space, n_best = refine_space(RunFolder.open(run_dir))
        header = SPACE_HEADER + f"# Refined from {run_dir} around its {n_best} best trials.\n"
    else:
        if data_path is not None:
            from anomtune.data import read_table
            from anomtune.preprocess import InputEncoder

            table = read_table(data_path, label=label)
            n_features = len(InputEncoder(table.schema).fit(table.features).output_names)
        if n_features < 1:
            raise ConfigError(f"--features must be at least 1, not {n_features}")
        space = default_space(n_features)
        header = SPACE_HEADER + f"# Sized for {n_features} encoded features.\n"
    text = space.to_toml(header)
    if output:
        from anomtune.persist import write_bytes_atomic

        try:
            write_bytes_atomic(output, text.encode())
        except OSError as exc:
            raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from exc
    if as_json:
        from anomtune.cli.output import print_json

        print_json(
            {
                "space": space.to_dict(),
                "fingerprint": space.fingerprint(),
                "refined_from": str(run_dir) if run_dir is not None else None,
                "output": output,
            }
        )
    elif not output:
        click.echo(text, nl=False)
