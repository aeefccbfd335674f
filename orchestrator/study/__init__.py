"""What is built on finished runs: experiments (grids of runs), the study's diagnostics and interference experiment,
exporting the chosen judge and applying it to new data, and the reports."""
