"""Emergency mode: while on, the batch matcher runs on its schedule over everything open."""
