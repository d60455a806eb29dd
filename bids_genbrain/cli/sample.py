"""``genbrain sample``: a checkpoint -> synthetic MNI-space images as a BIDS-Derivatives dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from ..model.presets import GUIDANCE_SCALE


def sample(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (genbrain pretrain --out)."),
    out: Path = typer.Argument(..., help="Output dataset folder."),
    n: int = typer.Option(1, "--n", min=1, help="Images to generate."),
    age: float | None = typer.Option(None, "--age", help="Age of every image."),
    sex: str | None = typer.Option(None, "--sex", help="Sex of every image (as trained: F/M)."),
    modality: str | None = typer.Option(None, "--modality",
                                        help="Modality (default: the model's only one)."),
    condition: list[str] = typer.Option(
        [], "--condition", help="Any other condition as KEY=VALUE (repeat)."),
    table: Path | None = typer.Option(
        None, "--table", help="TSV with one row per image (condition columns, optional "
        "modality); replaces --n/--age/--sex/--condition."),
    steps: int = typer.Option(50, "--steps", min=1, help="DDIM steps."),
    cfg: float = typer.Option(GUIDANCE_SCALE, "--cfg", help="Classifier-free guidance scale."),
    average: int = typer.Option(1, "--average", min=1,
                                help="Draws averaged per image (paper: 5)."),
    seed: int = typer.Option(0, "--seed", help="Run seed (each image's seeds in its sidecar)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Draws per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Generate images from a GenBrain checkpoint under given conditions. Conditions left
    out are unconditional (null embedding).
    """
    from ..errors import InputError

    try:
        _run(checkpoint, out, n, age, sex, modality, condition, table, steps, cfg, average,
             seed, batch_size, device)
    except (InputError, ValueError) as exc:
        typer.echo(f"genbrain sample: error: {exc}", err=True)
        raise typer.Exit(2) from None


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--condition {pair!r}: use KEY=VALUE, e.g. --condition diagnosis=AD")
        values[key.strip()] = value.strip()
    return values


def _run(checkpoint, out, n, age, sex, modality, condition, table, steps, cfg, average, seed,
         batch_size, device) -> None:
    import pandas as pd

    from ..model.checkpoint import load_checkpoint
    from ..model.sampling import conditions_table, write_synthetic_dataset
    from ..model.train import resolve_device

    dev = resolve_device(device)
    bundle = load_checkpoint(checkpoint, dev)
    if out.resolve() == checkpoint.resolve() or checkpoint.resolve() in out.resolve().parents:
        raise ValueError(f"{out} is inside the checkpoint folder; write elsewhere")
    if table is not None:
        if not table.is_file():
            raise ValueError(f"--table {table}: file not found")
        rows = pd.read_csv(table, sep="\t", na_values=["n/a"], keep_default_na=False)
        rows = rows.drop(columns=[c for c in ("participant_id", "session_id")
                                  if c in rows.columns])
        unknown = sorted(set(rows.columns) - {c.name for c in bundle.conditions})
        if unknown:
            raise ValueError(f"--table {table}: columns {unknown} are not conditions of the "
                             f"model ({[c.name for c in bundle.conditions]})")
    else:
        values = _parse_pairs(condition)
        if age is not None:
            values["age"] = age
        if sex is not None:
            values["sex"] = sex
        rows = conditions_table(bundle, n, values, modality)
    written = write_synthetic_dataset(bundle, rows, out, seed, steps=steps, cfg_scale=cfg,
                                      average=average, batch_size=batch_size, device=dev)
    typer.echo(f"{len(written)} image(s) written to {out}")
