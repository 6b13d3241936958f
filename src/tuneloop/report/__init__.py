"""Reports: plots and one self-contained HTML file per run."""
