"""The worker: the Faust app wired from the pipeline, the models it serves, outputs and watches."""
