"""Built-in plugins. Each registers through the ``backworks.plugins`` entry-point group, like any other."""
