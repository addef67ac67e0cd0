"""Command-line interface: each module registers one command or command group on `main`."""
