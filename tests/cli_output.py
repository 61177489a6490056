"""Reading the command line's wrapped output in tests.

The CLI wraps its messages at 100 columns, continuation lines indented by two spaces
(:func:`bayes_cmma.cli.wrap`); :func:`unwrap` puts each message back on one line.
"""

PREFIXES = ("error:", "warning:", "[bayes-cmma]", "interrupted")


def unwrap(text: str) -> str:
    """``text`` with every wrapped message joined back into one line."""
    out: list[str] = []
    for line in text.splitlines():
        continued = line.startswith("  ") and not line.startswith("   ") and out and out[-1].startswith(PREFIXES)
        if continued:
            out[-1] += " " + line[2:]
        else:
            out.append(line)
    return "\n".join(out)
