"""
The process level: the command line and its configuration, the wiring of
one gateway (`gateway.process.wiring.build_gateway`), serving it
(`gateway.process.serve`), the demo and its local Pebble stack, and the
public test doubles.  Nothing else in the package imports it.
"""
