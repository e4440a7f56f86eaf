"""The ``tsjnet`` command: a thin shell over the TSJNet library."""

from __future__ import annotations

import typer

import tsjnet  # noqa: F401  (applies the offline settings first)

app = typer.Typer(help="TSJNet infrared/visible fusion: train, fuse, evaluate.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """TSJNet infrared/visible fusion network."""


@app.command()
def info() -> None:
    """Versions and compute devices this installation will use."""
    import torch

    typer.echo(f"tsjnet {tsjnet.__version__}")
    typer.echo(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for index in range(torch.cuda.device_count()):
        typer.echo(f"  cuda:{index} {torch.cuda.get_device_name(index)}")
    try:
        import natten

        typer.echo(f"natten {natten.__version__}")
    except ImportError:
        typer.echo("natten not installed (the pure-PyTorch neighborhood attention is used)")
