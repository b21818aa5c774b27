"""Help texts: every command says what it does, what its arguments mean, and how it exits.

`add_command` is how the command modules add their parsers, so that each `--help` ends with the same kind of
exit-status table: the command's own statuses, then those every command shares.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

SHARED_EXITS: Mapping[int, str] = {
    78: "the configuration is invalid or incomplete (one line names the key)",
    130: "interrupted (Ctrl-C)",
}
JOB_ID = "ID is a job's id: the number `submit` printed, the `id` column of tuning_jobs, the first column of `jobs`."
DATA_FORMATS = """\
training data formats:
  .jsonl  one JSON object per line: {"text_input": "...", "output": "..."} (textInput also taken), or a
          Vertex AI conversation: {"contents": [{"role": "user", "parts": [{"text": "..."}]},
          {"role": "model", "parts": [{"text": "..."}]}], "systemInstruction": {...}} (Vertex AI only)
  .csv    a header row naming the columns text_input (or input, textInput) and output, then one pair a row
  gs://   (Vertex AI) a JSONL file already in Cloud Storage, used in place"""


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    exits: Mapping[int, str],
    notes: str = "",
) -> argparse.ArgumentParser:
    """A command's parser: `summary` for `tunekeeper --help`, `description` above its options, then `notes`
    and its exit statuses below them."""
    statuses = {0: "success", **exits, **SHARED_EXITS}
    table = "\n".join(f"  {code:<4}{meaning}" for code, meaning in sorted(statuses.items()))
    epilog = (f"{notes.rstrip()}\n\n" if notes else "") + f"exit status:\n{table}"
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
