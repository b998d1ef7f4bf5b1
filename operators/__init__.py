"""The reference project's own operators, written exactly like edgeflow's built-in ones."""
