"""`python -m pipeline …` runs the same CLI as the `artgan` console script."""

from pipeline.cli import app

if __name__ == "__main__":
    app()
