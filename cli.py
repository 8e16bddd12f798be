"""tuban's command line (placeholder until the commands land)."""

import click


@click.group()
def main() -> None:
    """tuban: change polygons (图斑) from quarterly imagery to street-office worklists."""
