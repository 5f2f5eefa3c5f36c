"""windtunnel's grid sweeper (hydra/sweeper=windtunnel_grid; `windtunnel sweep` picks it when train.pack > 1):
Hydra's basic sweeper, plus packing. With train.pack=K, grid points that differ only in optim.lr or train.seed are
launched K at a time as one job (train.pack_members lists each point's overrides), which trains them as
one fused model and writes each point's run dir under the name the unpacked sweep would give it."""
