"""The `posthoc` command line."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from analyzers.checks import check_definitions
from analyzers.definitions import load_paths
from schemas import AnalysisResult, AnalyzerSpec, Conversation, Procedure

app = typer.Typer(
    name="posthoc",
    help="Run procedural agents on finished conversations and deliver their outputs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class SchemaName(StrEnum):
    """Contracts whose JSON Schema `posthoc schema` prints."""

    conversation = "conversation"
    analyzer = "analyzer"
    procedure = "procedure"
    result = "result"


SCHEMA_MODELS: dict[SchemaName, type[BaseModel]] = {
    SchemaName.conversation: Conversation,
    SchemaName.analyzer: AnalyzerSpec,
    SchemaName.procedure: Procedure,
    SchemaName.result: AnalysisResult,
}


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Analyzer and procedure YAML, conversation JSON/JSONL, or folders."),
    ],
) -> None:
    """Check definitions and conversations; print one line per problem.

    Exits 0 when everything is valid, 1 when anything is not.
    """
    loaded = load_paths(paths)
    problems = loaded.problems + check_definitions(loaded)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {len(loaded.analyzers)} analyzer(s), {len(loaded.procedures)} procedure(s), "
        f"{len(loaded.conversations)} conversation(s)"
    )


@app.command()
def schema(
    name: Annotated[SchemaName, typer.Argument(help="Which contract.")],
) -> None:
    """Print the JSON Schema of a contract, for editors and other tools."""
    document = SCHEMA_MODELS[name].model_json_schema(mode="validation")
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


def main() -> None:
    """Entry point of the `posthoc` console script."""
    app()
