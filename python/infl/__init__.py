"""infl — influence functions from Python (a placeholder until the `pkg` branch's package
lands: take pkg's file at merge). Imports neither torch nor h5py: infl.captured and
infl.torch are imported explicitly."""
