"""Infrastructure every stage stands on: the workspace (SQLite), crash-safe writes, the writer
lock, file stamps, typed records, configs, the stage runner and its executors, progress bars, the
offline settings. Nothing here imports a stage."""
