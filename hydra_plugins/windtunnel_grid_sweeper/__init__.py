"""windtunnel's grid sweeper (hydra/sweeper=windtunnel_grid, the default of `windtunnel sweep`): the grid of
Hydra's basic sweeper, built from public Hydra APIs, plus packing. With train.pack=K, grid points that differ
only in optim.lr or train.seed are launched K at a time as one job (train.pack_members lists each point's
overrides), which trains them as one fused model and writes each point's run dir under the name the
unpacked sweep would give it. The grid itself comes from windtunnel.sweep.grid, which `windtunnel sweep`
also uses to check every job before any of them trains."""
