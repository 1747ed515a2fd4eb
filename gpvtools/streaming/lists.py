"""The one reading of a comma list on the command line (--by, --keep, --values, --systems, --targets …)."""


def comma_list(text):
    """TEXT's comma-separated items, stripped, empty ones left out ([] for None or "")."""
    return [item.strip() for item in text.split(",") if item.strip()] if text else []
