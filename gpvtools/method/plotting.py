"""matplotlib for the charts gpv-report and gpv-validate draw: pyplot on the Agg backend, and saving a figure."""

from pathlib import Path

from ..streaming.atomic import AtomicFile
from ..streaming.errors import GpvError, MissingDependency


def pyplot(what):
    """matplotlib.pyplot with the Agg backend; without matplotlib, the one line saying that WHAT needs it
    and which extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency(what, "matplotlib", "validate") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, **options):
    """FIG written to PATH in the format its suffix names, cropped to what is drawn, with savefig's OPTIONS
    (dpi, metadata); then closed."""
    try:
        with AtomicFile(path) as f:  # a failed run leaves an earlier figure whole
            fig.savefig(f, format=Path(path).suffix[1:] or None, bbox_inches="tight", **options)
    except OSError as e:
        raise GpvError(f"cannot write {path}: {e.strerror}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
