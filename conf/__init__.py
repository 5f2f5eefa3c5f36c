"""windtunnel's Hydra config tree: conf/ in the repository, shipped inside the package as windtunnel.conf."""
