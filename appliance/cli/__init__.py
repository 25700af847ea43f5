"""The ``appliance`` command (click + rich). Thin: parse, call a service, print."""
