"""Sending reports to the worker's input topic: `report-producer`, the generator, the bundled samples."""
