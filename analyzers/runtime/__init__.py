"""The run: `run()`, the tool loop, the prompt layout, output-recording tools and the execution
of structured procedures."""
